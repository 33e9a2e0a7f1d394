"""The training loop the CLI uses: ``fit`` trains for some epochs with a progress bar (loss,
throughput), evaluates after each epoch, and can save a checkpoint; ``evaluate`` measures loss
and accuracy over a loader; ``run`` builds everything from a config dict and can resume."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from . import functional as F
from . import random as fn_random
from .backend import get_device, to_numpy
from .checkpoint import save_checkpoint
from .tensor import Tensor, no_grad


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
) -> dict[str, float]:
    """One pass over ``loader``; returns mean loss, accuracy, images/s and seconds."""
    device = get_device(device)
    model.train()
    total_loss, correct, count, batches = 0.0, 0, 0, 0
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
        file=sys.stderr,
    )
    for x, y in bar:
        x, y = _to(x, device), _to(y, device)
        logits = model(x)
        loss = loss_fn(logits, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        batch_loss = float(loss.item())  # one sync per batch: the progress bar shows it anyway
        total_loss += batch_loss * len(y)
        correct += int((to_numpy(logits.data.argmax(axis=1)) == to_numpy(y.data)).sum())
        count += len(y)
        batches += 1
        elapsed = time.perf_counter() - start
        bar.set_postfix(loss=f"{batch_loss:.4f}", img_s=f"{count / max(elapsed, 1e-9):.0f}")
        if max_batches is not None and batches >= max_batches:
            break
    bar.close()
    seconds = time.perf_counter() - start
    return {
        "loss": total_loss / max(count, 1),
        "accuracy": correct / max(count, 1),
        "images_per_second": count / max(seconds, 1e-9),
        "seconds": seconds,
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
    checkpoint_path: str | None = None,
    config: dict | None = None,
    start_epoch: int = 0,
    history: dict | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, list]:
    """Train for epochs ``start_epoch+1 .. epochs``; print a line per epoch; return the history.

    With ``checkpoint_path``, the model, optimizer, scheduler, epoch, RNG state and ``config``
    are saved (atomically) after every epoch, so an interrupted run can resume from it. With a
    ``val_loader`` and ``patience``, training stops early once validation accuracy has not
    improved for ``patience`` epochs.
    """
    device = get_device(device)
    history = history if history is not None else {}
    for epoch in range(start_epoch + 1, epochs + 1):
        train = train_epoch(
            model,
            train_loader,
            optimizer,
            device,
            loss_fn=loss_fn,
            scheduler=scheduler if scheduler_per_batch else None,
            description=f"epoch {epoch}/{epochs}",
            progress=progress,
        )
        if scheduler is not None and not scheduler_per_batch:
            scheduler.step()
        record = {
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
                record.update({f"{split}_loss": result["loss"], f"{split}_acc": result["accuracy"]})
                line += f" | {split} loss {result['loss']:.4f} acc {100 * result['accuracy']:.2f}%"
        for key, value in record.items():
            history.setdefault(key, []).append(value)
        log(line)
        if checkpoint_path is not None:
            save_checkpoint(
                checkpoint_path,
                model,
                optimizer,
                scheduler,
                epoch=epoch,
                config=config,
                rng_state=fn_random.get_state(),
                extra={"history": history},
            )
        if patience is not None and "val_acc" in history:
            best = int(np.argmax(history["val_acc"]))
            if len(history["val_acc"]) - 1 - best >= patience:
                log(
                    f"early stop: validation accuracy has not improved for {patience} epochs "
                    f"(best {100 * history['val_acc'][best]:.2f}% after epoch {best + 1})"
                )
                break
    return history


# ===================================================================== a whole run from a config
DATASETS = ("mnist", "fashion-mnist", "cifar10")


def build_datasets(name: str, data_dir: str | None) -> tuple[Any, Any]:
    from . import data

    classes = {"mnist": data.MNIST, "fashion-mnist": data.FashionMNIST, "cifar10": data.CIFAR10}
    if name not in classes:
        raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(classes)}")
    return classes[name](root=data_dir, train=True), classes[name](root=data_dir, train=False)


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


def run(
    config: dict,
    epochs: int,
    out: str,
    *,
    device: Any = "cpu",
    data_dir: str | None = None,
    resume: str | None = None,
    datasets: tuple | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train ``config`` (dataset, model, optimizer, lr, batch_size, seed, ...) up to ``epochs``,
    checkpointing into ``out`` after each epoch. With ``resume`` (a checkpoint path) the model,
    optimizer, RNG state and data order continue where that run stopped: on the CPU the result
    equals an uninterrupted run bit for bit."""
    from . import models
    from .checkpoint import load_checkpoint
    from .data import DataLoader

    saved = load_checkpoint(resume) if resume is not None else None
    if saved is not None:
        config = saved["config"]
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
    scheduler = build_scheduler(config, optimizer, epochs, len(train_loader))
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
        log(f"fastnet: resuming {resume} after epoch {start_epoch}")
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
        checkpoint_path=f"{out}/checkpoint.safetensors",
        config=config,
        start_epoch=start_epoch,
        history=history,
        progress=progress,
        log=log,
    )
    return {"model": model, "optimizer": optimizer, "history": history, "config": config}
