"""The training loop the CLI uses.

* ``train_epoch``: one pass with a progress bar (running-mean loss, throughput); a NaN or
  infinite loss raises :class:`NonFiniteLossError`, and no weight ever sees it.
* ``fit``: epochs of ``train_epoch`` and evaluation; into a run folder it writes the checkpoint
  after every epoch (and snapshots every N), ``best.safetensors`` with keep-best, and the
  :class:`RunFolder` files (``config.json``, ``history.json``, ``steps.csv``, TensorBoard).
* ``evaluate``: loss and accuracy over a loader.
* ``run``: everything built from a config dict (``validate_config`` checks it), with resume
  (``resumed_config`` says what a resumed run continues with). The config's rules and builders
  live in :mod:`fastnet.run_config` (importable from here too).

The host never waits for the device inside a training step. Each step's loss and count of correct
predictions stay on the device; a device flag, set by the first loss that is not finite, makes
that and every later ``optimizer.step(skip_if=flag)`` skip its update on the device. The host
reads what accumulated in one transfer when the progress display refreshes (every
``refresh_seconds``) and at the end of the epoch: that read raises the error, names the first
bad step, and feeds the ``on_step`` callbacks of the steps since the last read. On the CPU a
"transfer" is free and the numbers are the same as a per-step read would give.
"""

from __future__ import annotations

import functools
import math
import os
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from . import distributed
from . import functional as F
from . import random as fn_random
from .backend import Device, get_device
from .checkpoint import load, save, save_checkpoint
from .nn.parallel import DistributedDataParallel
from .optim import Optimizer
from .run_config import (  # noqa: F401 - fastnet.train.<name> for the CLI and the tests
    DATASETS,
    NORMALIZATION,
    RESUME_OVERRIDES,
    SETTING_RULES,
    build_datasets,
    build_optimizer,
    build_scheduler,
    check_setting,
    eval_transform,
    model_kwargs,
    resumed_config,
    train_transform,
    validate_config,
)
from .run_folder import RunFolder
from .tensor import Tensor, no_grad

# How often the host reads the step losses (and redraws the progress bar): a few times a second.
REFRESH_SECONDS = 0.25


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN or infinite: a training loss is caught before any weight sees it, a
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
    """A batch on ``device``: host data is uploaded (integer labels record their value range on
    the host on the way, so the loss need not read it back from the device)."""
    return batch.to(device) if isinstance(batch, Tensor) else Tensor(batch, device=device)


def _read(device: Device, *columns: list) -> list[list[float]]:
    """Columns of 0-d device values (one list per quantity, one value per step or batch) as
    float64 host lists, all in ONE device-to-host transfer."""
    if not columns[0]:
        return [[] for _ in columns]
    xp = device.xp
    stacked = xp.stack([xp.stack(column).astype(np.float64) for column in columns])
    return device.to_host(stacked).tolist()


def _correct(predicted: Any, labels: Tensor) -> Any:
    """How many ``predicted`` classes (a device array) are the labels: a 0-d count on the
    device."""
    return (predicted == labels.data).sum()


def evaluate(
    model: Any,
    loader: Iterable,
    device: Any = "cpu",
    loss_fn: Callable = F.cross_entropy,
    return_predictions: bool = False,
) -> dict[str, Any]:
    """Mean loss and accuracy of ``model`` over ``loader`` in eval mode (no graph recorded).

    Losses and counts stay on the device until the end: one transfer reads them all, and one
    more the predictions and labels when ``return_predictions``. A loader whose sampler shards
    the set over several ranks (``DistributedSampler``) gives the numbers of the whole set, the
    same on every rank (every rank must call this, as it is a collective)."""
    device = get_device(device)
    sharded = getattr(getattr(loader, "sampler", None), "num_replicas", 1) > 1
    if sharded and return_predictions:
        raise ValueError("return_predictions needs the whole set: evaluate it on one rank")
    was_training = model.training
    model.eval()
    losses, right, predictions, labels = [], [], [], []
    count = 0
    with no_grad():
        for x, y in loader:
            x, y = _to(x, device), _to(y, device)
            logits = model(x)
            losses.append(loss_fn(logits, y, reduction="sum").data.reshape(()))
            predicted = logits.data.argmax(axis=1)
            right.append(_correct(predicted, y))
            count += len(y)
            if return_predictions:
                predictions.append(predicted)
                labels.append(y.data)
    model.train(was_training)
    losses, right = _read(device, losses, right)
    total_loss = 0.0
    for loss in losses:  # in order, as the host always summed them (the CPU's numbers stay)
        total_loss += loss
    correct = int(sum(right))
    if sharded:  # this rank saw its shard: the numbers of the whole set are the ranks' sums
        totals = np.array([total_loss, correct, count], np.float64)
        total_loss, correct, count = distributed.get_communicator().control.allreduce(totals)
        correct, count = int(correct), int(count)
    result: dict[str, Any] = {
        "loss": total_loss / max(count, 1),
        "accuracy": correct / max(count, 1),
        "count": count,
    }
    if return_predictions:
        both = np.empty((2, 0), np.int64)
        if predictions:
            xp = device.xp
            truth = xp.concatenate(labels).astype(np.int64, copy=False)
            both = device.to_host(xp.stack((xp.concatenate(predictions), truth)))
        result["predictions"], result["labels"] = both
    return result


class _StepReadout:
    """The host's side of a training epoch: what each step left on the device, read in one
    transfer per :meth:`read`, which adds it to the totals, calls ``on_step`` for each step and
    raises :class:`NonFiniteLossError` at the first loss that is not finite."""

    def __init__(self, device: Device, epoch: int | None, on_step: Callable | None) -> None:
        self.device, self.epoch, self.on_step = device, epoch, on_step
        self.losses: list = []  # per step not yet read: the loss (0-d, on the device)
        self.right: list = []  # ... its count of correct predictions (0-d, on the device)
        self.sizes: list[int] = []  # ... and, on the host, its batch size and learning rate
        self.lrs: list[float] = []
        self.steps, self.total_loss, self.correct, self.count = 0, 0.0, 0, 0
        self.last_read = time.perf_counter()

    def add(self, loss: Any, right: Any, size: int, lr: float) -> None:
        self.losses.append(loss)
        self.right.append(right)
        self.sizes.append(size)
        self.lrs.append(lr)

    def read(self) -> None:
        self.last_read = time.perf_counter()
        losses, right = _read(self.device, self.losses, self.right)
        for loss, step_right, size, lr in zip(losses, right, self.sizes, self.lrs, strict=True):
            self.steps += 1
            if not math.isfinite(loss):
                raise NonFiniteLossError(loss, self.epoch, self.steps)
            self.total_loss += loss * size
            self.correct += int(step_right)
            self.count += size
            if self.on_step is not None:
                self.on_step(self.steps, loss, lr)
        for pending in (self.losses, self.right, self.sizes, self.lrs):
            pending.clear()


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
    refresh_seconds: float = REFRESH_SECONDS,
) -> dict[str, float]:
    """One pass over ``loader``; returns mean loss, accuracy, images/s, seconds and the last
    learning rate. ``on_step(step, loss, lr)`` is called for each step (steps count from 1), at
    the host's reads: every ``refresh_seconds`` (0: after every step) and at the end.

    Raises :class:`NonFiniteLossError` (naming ``epoch`` and the first bad step) on a NaN or inf
    loss, at the first read after it; that step's update and every later one are skipped on the
    device, so the weights stay those of the step before. An optimizer that is not a
    :class:`fastnet.optim.Optimizer` (no ``skip_if``) is guarded by a read before each update."""
    device = get_device(device)
    xp = device.xp
    model.train()
    parallel = isinstance(model, DistributedDataParallel) and model.communicator.size > 1
    ranks = model.communicator if parallel else None
    skips_on_device = isinstance(optimizer, Optimizer)
    readout = _StepReadout(device, epoch, on_step)
    bad = xp.zeros(1, dtype=bool)  # this or an earlier step's loss was not finite
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
        mininterval=REFRESH_SECONDS,  # drawing on every batch would slow small models
        file=sys.stderr,
    )
    batches = 0
    try:
        for x, y in bar:
            x, y = _to(x, device), _to(y, device)
            logits = model(x)
            loss = loss_fn(logits, y)
            value = loss.data.reshape(())
            right, size = _correct(logits.data.argmax(axis=1), y), len(y)
            lr = float(optimizer.param_groups[0]["lr"])
            if ranks is not None:  # the step's numbers over every rank, sent during backward
                stats = ranks.iallreduce(xp.stack([value, right]).astype(np.float64), "sum")
            else:
                readout.add(value, right, size, lr)
                if skips_on_device:
                    bad = bad | ~xp.isfinite(value)
                else:
                    readout.read()  # raises before a NaN reaches this optimizer's weights
            optimizer.zero_grad()
            loss.backward()
            if ranks is not None:  # equal shards: the global mean loss is the ranks' mean
                total = stats.wait()
                value, right, size = total[0] / ranks.size, total[1], size * ranks.size
                readout.add(value, right, size, lr)
                if skips_on_device:  # any rank's non-finite loss skips the update on all
                    bad = bad | ~xp.isfinite(value)
                else:
                    readout.read()
            optimizer.step(**({"skip_if": bad} if skips_on_device else {}))
            if scheduler is not None:
                scheduler.step()
            batches += 1
            if time.perf_counter() - readout.last_read >= refresh_seconds:
                readout.read()
                _show(bar, readout, start)
            if max_batches is not None and batches >= max_batches:
                break
        readout.read()
    finally:
        bar.close()
    seconds = time.perf_counter() - start
    return {
        "loss": readout.total_loss / max(readout.count, 1),
        "accuracy": readout.correct / max(readout.count, 1),
        "images_per_second": readout.count / max(seconds, 1e-9),
        "seconds": seconds,
        "lr": lr,
    }


def _show(bar: Any, readout: _StepReadout, start: float) -> None:
    """The running-mean loss and throughput, shown at the bar's next redraw (not forced now)."""
    elapsed = time.perf_counter() - start
    bar.set_postfix(
        loss=f"{readout.total_loss / max(readout.count, 1):.4f}",
        img_s=f"{readout.count / max(elapsed, 1e-9):.0f}",
        refresh=False,
    )


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
    # Under DistributedDataParallel every rank trains and evaluates; rank 0 alone writes files.
    parallel = model if isinstance(model, DistributedDataParallel) else None
    bare = parallel.module if parallel is not None else model  # what checkpoints hold
    writes = folder is not None and (parallel is None or parallel.communicator.rank == 0)
    batches = len(train_loader) if hasattr(train_loader, "__len__") else 0
    global_step = start_epoch * batches
    run_start = time.perf_counter() - (history["elapsed"][-1] if history.get("elapsed") else 0.0)
    files = RunFolder(folder, config or {}, start_epoch, global_step) if writes else None
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
            if parallel is not None:  # rank 0's running statistics, as the checkpoint keeps
                parallel.sync_buffers()
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
                best_state = (epoch, bare.state_dict())  # copies on the host
                if writes:
                    save(best_state[1], folder / "best.safetensors")
            if writes:
                paths = [folder / "checkpoint.safetensors"]
                if checkpoint_every and epoch % checkpoint_every == 0:
                    paths.append(folder / f"checkpoint_epoch{epoch}.safetensors")
                for path in paths:
                    save_checkpoint(
                        path,
                        bare,
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
        _restore_best(bare, history, best_state, folder, log)
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
    run bit for bit. Raises ValueError for a setting out of range.

    Under ``mpiexec -n R`` (:mod:`fastnet.distributed`) R ranks train one model: ``batch_size``
    is the global batch, each rank takes 1/R of it from its shard (``DistributedSampler``), the
    model is wrapped in ``DistributedDataParallel`` (returned bare), the metrics are those of
    every rank together; rank 0 alone writes files and logs."""
    from . import models, nn
    from .checkpoint import load_checkpoint
    from .data import DataLoader, DeviceDataLoader, DistributedSampler

    group = distributed.init_process_group(device=device)
    if group.rank != 0:
        log, progress = _quiet, False
    device = get_device(device)
    if device.name == "cpu":
        loader = DataLoader
    else:  # the dataset lives on the GPU: batches are made there, nothing is copied per step
        loader = functools.partial(DeviceDataLoader, device=device)
    saved = load_checkpoint(resume) if resume is not None else None
    if saved is not None:
        config, epochs = resumed_config(saved, epochs, config)
    else:
        config = dict(config, epochs=epochs)
    validate_config(config)
    if config["batch_size"] % group.size:
        raise ValueError(
            f"batch_size {config['batch_size']} is the global batch: it must divide evenly "
            f"over the {group.size} ranks"
        )
    if saved is not None and config.get("ranks", 1) != group.size:  # same global batches
        log(f"note: resuming a {config.get('ranks', 1)}-rank run on {group.size}: not bit-exact")
    config["ranks"] = group.size
    if config.get("seed") is None:  # a resumed run needs the seed that ordered its data
        seed = np.array([np.random.default_rng().integers(2**31)], np.int64)
        config["seed"] = int(group.control.broadcast(seed)[0])  # one seed for every rank
    fn_random.manual_seed(config["seed"])
    train_set, test_set = (
        datasets if datasets is not None else build_datasets(config["dataset"], data_dir)
    )
    if config.get("labels_per_class"):
        from .data import subset

        train_set = subset(train_set, config["labels_per_class"], seed=config["seed"])
    config.setdefault("kwargs", model_kwargs(config["model"], train_set.images))
    bare = models.create(config["model"], **config["kwargs"]).to(device)
    if config.get("sync_batchnorm"):
        bare = nn.SyncBatchNorm.convert_sync_batchnorm(bare)
    model = DistributedDataParallel(bare, group) if group.size > 1 else bare
    optimizer = build_optimizer(config, model.parameters())

    def shard(dataset: Any, evaluation: bool) -> dict[str, Any]:
        """The loader arguments that give this rank its shard (none for one process)."""
        if group.size == 1:
            return {"shuffle": not evaluation}
        sampler = DistributedSampler(
            dataset, shuffle=not evaluation, seed=config["seed"], pad=not evaluation
        )
        return {"sampler": sampler}

    val_loader = None
    if config.get("val_fraction"):
        from .data import random_split

        holdout = max(1, int(round(config["val_fraction"] * len(train_set))))
        train_set, val_set = random_split(
            train_set, [len(train_set) - holdout, holdout], seed=config["seed"]
        )
        val_loader = loader(
            val_set, batch_size=512, transform=eval_transform(config), **shard(val_set, True)
        )
    train_loader = loader(
        train_set,
        batch_size=config["batch_size"] // group.size,
        seed=config["seed"],
        transform=train_transform(config),
        **shard(train_set, False),
    )
    test_loader = loader(
        test_set, batch_size=512, transform=eval_transform(config), **shard(test_set, True)
    )
    scheduler = build_scheduler(config, optimizer, config["epochs"], len(train_loader))
    smoothing = config.get("label_smoothing", 0.0)
    loss_fn = (
        (lambda logits, y, **kw: F.cross_entropy(logits, y, label_smoothing=smoothing, **kw))
        if smoothing
        else F.cross_entropy
    )
    start_epoch, history = 0, {}
    if saved is not None:
        bare.load_state_dict(saved["model"])
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
    return {"model": bare, "optimizer": optimizer, "history": history, "config": config}


def _quiet(line: str) -> None:
    """The log of every rank but 0."""
