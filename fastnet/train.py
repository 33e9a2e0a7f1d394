"""The training loop the CLI uses: ``fit`` trains for some epochs with a progress bar (loss,
throughput), evaluates after each epoch, and can save a checkpoint; ``evaluate`` measures loss
and accuracy over a loader; ``run`` builds everything from a config dict and can resume."""
from __future__ import annotations

import sys
import time
from typing import Any, Callable, Iterable

import numpy as np
from tqdm.auto import tqdm

from . import functional as F
from . import random as fn_random
from .backend import get_device, to_numpy
from .checkpoint import save_checkpoint
from .tensor import Tensor, no_grad


def _to(batch: Any, device: Any) -> Tensor:
    return batch.to(device) if isinstance(batch, Tensor) else Tensor(batch, device=device)


def evaluate(model: Any, loader: Iterable, device: Any = "cpu",
             loss_fn: Callable = F.cross_entropy, return_predictions: bool = False) -> dict[str, Any]:
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
    result: dict[str, Any] = {"loss": total_loss / max(count, 1), "accuracy": correct / max(count, 1),
                              "count": count}
    if return_predictions:
        result["predictions"] = np.concatenate(predictions) if predictions else np.empty(0, np.int64)
        result["labels"] = np.concatenate(labels) if labels else np.empty(0, np.int64)
    return result


def train_epoch(model: Any, loader: Iterable, optimizer: Any, device: Any = "cpu", *,
                loss_fn: Callable = F.cross_entropy, scheduler: Any = None, description: str = "train",
                progress: bool = True, max_batches: int | None = None) -> dict[str, float]:
    """One pass over ``loader``; returns mean loss, accuracy, images/s and seconds."""
    device = get_device(device)
    model.train()
    total_loss, correct, count, batches = 0.0, 0, 0, 0
    start = time.perf_counter()
    total = len(loader) if hasattr(loader, "__len__") else None
    if max_batches is not None and total is not None:
        total = min(total, max_batches)
    bar = tqdm(loader, total=total, desc=description, disable=not progress, leave=False,
               dynamic_ncols=True, file=sys.stderr)
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
    return {"loss": total_loss / max(count, 1), "accuracy": correct / max(count, 1),
            "images_per_second": count / max(seconds, 1e-9), "seconds": seconds}


def fit(model: Any, train_loader: Iterable, optimizer: Any, epochs: int, *, test_loader: Iterable | None = None,
        device: Any = "cpu", loss_fn: Callable = F.cross_entropy, scheduler: Any = None,
        scheduler_per_batch: bool = False, checkpoint_path: str | None = None, config: dict | None = None,
        start_epoch: int = 0, history: dict | None = None, progress: bool = True,
        log: Callable[[str], None] = print) -> dict[str, list]:
    """Train for epochs ``start_epoch+1 .. epochs``; print a line per epoch; return the history.

    With ``checkpoint_path``, the model, optimizer, scheduler, epoch, RNG state and ``config``
    are saved (atomically) after every epoch, so an interrupted run can resume from it.
    """
    device = get_device(device)
    history = history if history is not None else {}
    for epoch in range(start_epoch + 1, epochs + 1):
        train = train_epoch(model, train_loader, optimizer, device, loss_fn=loss_fn,
                            scheduler=scheduler if scheduler_per_batch else None,
                            description=f"epoch {epoch}/{epochs}", progress=progress)
        if scheduler is not None and not scheduler_per_batch:
            scheduler.step()
        record = {"train_loss": train["loss"], "train_acc": train["accuracy"], "seconds": train["seconds"],
                  "images_per_second": train["images_per_second"]}
        line = (f"epoch {epoch}/{epochs}: train loss {train['loss']:.4f} acc {100 * train['accuracy']:.2f}% "
                f"| {train['seconds']:.1f}s, {train['images_per_second']:.0f} img/s")
        if test_loader is not None:
            test = evaluate(model, test_loader, device, loss_fn)
            record.update(test_loss=test["loss"], test_acc=test["accuracy"])
            line += f" | test loss {test['loss']:.4f} acc {100 * test['accuracy']:.2f}%"
        for key, value in record.items():
            history.setdefault(key, []).append(value)
        log(line)
        if checkpoint_path is not None:
            save_checkpoint(checkpoint_path, model, optimizer, scheduler, epoch=epoch, config=config,
                            rng_state=fn_random.get_state(), extra={"history": history})
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
        return optim.SGD(parameters, lr=lr, momentum=momentum, weight_decay=decay, nesterov=momentum > 0)
    raise ValueError(f"unknown optimizer {name!r}; choose from adam, adamw, sgd")


def model_kwargs(model: str, images: Any, classes: int = 10) -> dict:
    """The builder arguments that fit a dataset's image shape (N, C, H, W)."""
    channels, side = int(images.shape[1]), int(images.shape[-1])
    if model == "mlp":
        return {"in_features": channels * side * side, "classes": classes}
    return {"channels": channels, "image_size": side, "classes": classes}


def run(config: dict, epochs: int, out: str, *, device: Any = "cpu", data_dir: str | None = None,
        resume: str | None = None, datasets: tuple | None = None, progress: bool = True,
        log: Callable[[str], None] = print) -> dict[str, Any]:
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
    train_set, test_set = datasets if datasets is not None else build_datasets(config["dataset"], data_dir)
    if config.get("labels_per_class"):
        from .data import subset

        train_set = subset(train_set, config["labels_per_class"], seed=config["seed"])
    config.setdefault("kwargs", model_kwargs(config["model"], train_set.images))
    model = models.create(config["model"], **config["kwargs"]).to(device)
    optimizer = build_optimizer(config, model.parameters())
    train_loader = DataLoader(train_set, batch_size=config["batch_size"], shuffle=True, seed=config["seed"])
    test_loader = DataLoader(test_set, batch_size=512)
    start_epoch, history = 0, {}
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        fn_random.set_state(saved["rng"])
        start_epoch, history = saved["epoch"], saved["extra"].get("history", {})
        train_loader.epoch = start_epoch  # epoch e's order depends only on (seed, e)
        log(f"fastnet: resuming {resume} after epoch {start_epoch}")
    history = fit(model, train_loader, optimizer, epochs, test_loader=test_loader, device=device,
                  checkpoint_path=f"{out}/checkpoint.safetensors", config=config, start_epoch=start_epoch,
                  history=history, progress=progress, log=log)
    return {"model": model, "optimizer": optimizer, "history": history, "config": config}
