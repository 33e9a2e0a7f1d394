"""Self-supervised pretraining: learn an encoder (a classifier without its last layer, or its
``features``: :func:`pretrained_part`) from images alone.

* :class:`SimCLR` (Chen et al. 2020; :mod:`fastnet.pretrain_contrastive`): two random views of
  each image, a projection head, and the NT-Xent loss over the 2N projections.
* Reconstruction methods (``mae`` for the ViT, ``denoise`` for the CNNs) come from
  :mod:`fastnet.pretrain_reconstruction`; :func:`pretrain` picks one by name.
* The monitors (:mod:`fastnet.pretrain_monitors`): each epoch, the weighted kNN accuracy of
  the frozen features, with ``monitor_size`` training images, drawn at random without looking
  at their labels, as the memory bank and as many test images as queries; at the end, a linear
  probe trained on ``probe_size`` training images (0, the default: all of them, with all their
  labels) and scored on the whole test set.
* :func:`pretrain`: the run. The training loop reads the training images and never their labels
  (the monitors read the labels of the memory bank and of the probe set, and the test labels);
  AdamW under a per-step linear warm-up (the first ``WARMUP_FRACTION`` of the steps) then cosine
  decay to zero. The images are uploaded to the device once, as stored; each step gathers a
  batch there. Into ``out`` it writes ``encoder.safetensors`` (the encoder alone, under the
  classifier's names, with a checkpoint config that ``fastnet finetune --from`` rebuilds the
  model from), ``config.json``, ``steps.csv``, ``history.json`` (per epoch: loss, kNN
  accuracy, seconds; and the final linear-probe accuracy) and, when matplotlib is installed,
  the pictures of :mod:`fastnet.pretrain_plots` (embedding map, retrievals, reconstructions).
"""

from __future__ import annotations

import functools
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from . import distributed, models, nn, optim
from . import random as fn_random
from .backend import Device, get_device
from .checkpoint import save_checkpoint
from .pretrain_contrastive import SimCLR
from .pretrain_monitors import encode, knn_accuracy, linear_probe, unit_pixels, warmup_cosine
from .run_config import NORMALIZATION, model_kwargs
from .run_folder import RunFolder, _write_json
from .tensor import Tensor
from .train import REFRESH_SECONDS, _quiet, _show, _StepReadout

__all__ = [
    "METHODS",
    "METHOD_DEFAULTS",
    "SimCLR",
    "ENCODERS",
    "pretrained_part",
    "check_method",
    "pretrain",
]

METHODS = ("simclr", "mae", "denoise")

# What a run uses when the caller gives nothing else (`fastnet pretrain` shows these).
METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
    "simclr": {"epochs": 20, "batch_size": 256, "lr": 1e-3, "temperature": 0.5, "encoder": "trunk"},
    "mae": {
        "epochs": 20,
        "batch_size": 256,
        "lr": 1e-3,
        "temperature": None,
        "encoder": "features",
    },
    "denoise": {
        "epochs": 20,
        "batch_size": 256,
        "lr": 1e-3,
        "temperature": None,
        "encoder": "features",
    },
}

WARMUP_FRACTION = 0.1  # of all steps, at least one step


ENCODERS = ("trunk", "features")


def pretrained_part(encoder: str, classifier: nn.Module) -> nn.Module:
    """The part of ``classifier`` (a :class:`~fastnet.models.Classifier`) that pretraining
    trains, after removing from ``classifier`` what it does not. ``trunk``: everything but the
    head's last Linear (:func:`fastnet.finetune.drop_head`; for the MNIST CNN the hidden Linear
    too, as SimCLRv2 fine-tunes from the projection head's first layer). ``features``: the
    classifier's ``features`` (the reconstruction methods' only choice: the MAE drops patch
    tokens inside the ViT's features, the denoiser decodes from them), and the head goes.
    ``classifier`` is then what ``encoder.safetensors`` holds: its names are the classifier's,
    without the last Linear's."""
    from .finetune import drop_head

    if encoder not in ENCODERS:
        raise ValueError(f"unknown encoder {encoder!r}; choose from {', '.join(ENCODERS)}")
    if encoder == "trunk":
        return drop_head(classifier)
    classifier.head = nn.Identity()
    return classifier.features


def _reconstruction(method: str, encoder: nn.Module, images: np.ndarray) -> nn.Module:
    """The reconstruction module of ``method`` around ``encoder`` (see
    :mod:`fastnet.pretrain_reconstruction`), with its default settings."""
    from . import pretrain_reconstruction as reconstruction

    channels, side = int(images.shape[1]), int(images.shape[-1])
    if method == "mae":
        patch = encoder.patch_embedding.projection.kernel_size[0]
        return reconstruction.MaskedAutoencoder(encoder, side, channels, patch)
    return reconstruction.DenoisingAutoencoder(encoder, side, channels)


def check_method(method: str, model_name: str, encoder: str | None = None) -> None:
    """ValueError unless ``method`` is known and can pretrain model ``model_name``: mae needs
    the ViT (it drops patch tokens), denoise a convolutional model (not vit or mlp); simclr
    takes any model, and is the one method with a choice of ``encoder`` (see
    :func:`pretrained_part`)."""
    if method not in METHODS:
        raise ValueError(f"unknown pretraining method {method!r}; choose from {', '.join(METHODS)}")
    if model_name not in models.names():
        raise ValueError(f"unknown model {model_name!r}; available: {', '.join(models.names())}")
    if method == "mae" and model_name != "vit":
        raise ValueError(
            f"method mae masks the patch tokens of a ViT: it cannot pretrain model {model_name} "
            f"(use --model vit, or --method denoise or simclr)"
        )
    if encoder not in (None, "features") and method != "simclr":
        raise ValueError(
            f"method {method} pretrains the features of a model: --encoder {encoder} is "
            f"SimCLR's choice"
        )
    if method == "denoise" and model_name in ("vit", "mlp"):
        raise ValueError(
            f"method denoise pretrains a convolutional model, not {model_name} "
            f"(use --method mae for the vit, simclr for any model)"
        )


def _scheduler(optimizer: Any, total_steps: int) -> Any:
    warmup = max(1, int(WARMUP_FRACTION * total_steps))
    return optim.LambdaLR(
        optimizer, functools.partial(warmup_cosine, total=total_steps, warmup=warmup)
    )


def _input_preparation(dataset: str | None, device: Device) -> Callable[[Any], Any]:
    """Stored images (a device array) → the model's input: pixels in [0, 1], then the dataset's
    per-channel (x − mean) / std, as fastnet train and finetune normalise (none for a dataset
    without a name)."""
    prefix = NORMALIZATION.get(dataset or "")
    if prefix is None:
        return unit_pixels
    from . import data

    mean, std = (
        device.upload(np.reshape(getattr(data, f"{prefix}_{which}"), (1, -1, 1, 1)), np.float32)
        for which in ("MEAN", "STD")
    )
    return lambda stored: (unit_pixels(stored) - mean) / std


# ===================================================================== the run
def _pretrain_epoch(
    model: Any,
    images: Any,
    prepare: Callable[[Any], Any],
    optimizer: Any,
    scheduler: Any,
    device: Device,
    *,
    batch_size: int,
    seed: int,
    epoch: int,
    epochs: int,
    progress: bool,
    on_step: Callable[[int, float, float], None],
    parallel: nn.DistributedDataParallel | None = None,
) -> dict[str, float]:
    """One pass over the stored ``images`` (a device array) in a seeded order, ``model.loss`` of
    each batch as ``prepare`` makes it the model's input; the last partial batch is dropped
    (every step contrasts the same number of images). Losses stay on the device until a
    progress refresh (see fastnet.train): a NaN or infinite loss skips its update on the device
    and raises NonFiniteLossError at the read.

    With ``parallel`` (the model's DistributedDataParallel over R ranks) ``batch_size`` is the
    global batch: every rank draws the same order and takes its 1/R of each step's images (the
    r-th part), its views from its own generator, and the loss shown is the ranks' mean."""
    xp = device.xp
    group = parallel.communicator if parallel is not None else distributed.SingleProcess()
    size = min(batch_size, len(images))
    steps = len(images) // size
    share = size // group.size
    order = np.random.default_rng([seed, epoch]).permutation(len(images))[: steps * size]
    order = device.upload(order)
    rank = [group.rank] if group.size > 1 else []  # one process keeps its draws
    views = np.random.default_rng([seed, epoch, 1, *rank])  # the augmentations' draws
    readout = _StepReadout(device, epoch, on_step)
    bad = xp.zeros(1, dtype=bool)  # this or an earlier step's loss was not finite
    nothing_counted = xp.zeros((), np.int64)  # the readout's correct-prediction column
    lr = float(optimizer.param_groups[0]["lr"])
    model.train()
    start = time.perf_counter()
    bar = tqdm(
        range(steps),
        desc=f"epoch {epoch}/{epochs}",
        disable=not progress,
        leave=False,
        dynamic_ncols=True,
        mininterval=REFRESH_SECONDS,
        file=sys.stderr,
    )
    try:
        for step in bar:
            first = step * size + group.rank * share
            batch = Tensor(prepare(images[order[first : first + share]]), device=device)
            if parallel is not None:  # the forward is model.loss, not the wrapper's
                parallel.sync_buffers()
            loss = model.loss(batch, views)
            value = loss.data.reshape(())
            lr = float(optimizer.param_groups[0]["lr"])
            if group.size > 1:  # every rank's loss, sent during backward
                stats = group.iallreduce(value.astype(np.float64).reshape(1), "mean")
            optimizer.zero_grad()
            loss.backward()
            if group.size > 1:
                value = stats.wait()[0]
            readout.add(value, nothing_counted, size, lr)
            bad = bad | ~xp.isfinite(value)
            optimizer.step(skip_if=bad)
            scheduler.step()
            if time.perf_counter() - readout.last_read >= REFRESH_SECONDS:
                readout.read()
                _show(bar, readout, start)
        readout.read()
    finally:
        bar.close()
    seconds = time.perf_counter() - start
    return {
        "loss": readout.total_loss / max(readout.count, 1),
        "seconds": seconds,
        "images_per_second": readout.count / max(seconds, 1e-9),
        "lr": lr,
    }


def _sample(count: int, size: int, seed: list[int]) -> np.ndarray:
    """``size`` (0: all) of ``count`` indices, drawn at random without replacement, sorted."""
    if size <= 0 or size >= count:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, size, replace=False))


class _KnnMonitor:
    """The kNN accuracy of an encoder's features: ``size`` (0: all) images of ``labelled`` as
    the memory bank, ``size`` test images as the queries, drawn at random (not by label) and
    uploaded once."""

    def __init__(
        self,
        labelled: Any,
        test_set: Any,
        size: int,
        seed: int,
        device: Device,
        prepare: Callable[[Any], Any],
    ) -> None:
        bank = _sample(len(labelled.images), size, [seed, 2])
        queries = _sample(len(test_set.images), size, [seed, 3])
        self.bank_images = device.upload(labelled.images[bank])
        self.query_images = device.upload(test_set.images[queries])
        self.bank_labels, self.query_labels = labelled.labels[bank], test_set.labels[queries]
        self.device, self.prepare = device, prepare

    def features(self, encoder: nn.Module, images: Any) -> Any:
        return encode(encoder, images, self.device, self.prepare)

    def __call__(self, encoder: nn.Module) -> float:
        return knn_accuracy(
            self.features(encoder, self.bank_images),
            self.bank_labels,
            self.features(encoder, self.query_images),
            self.query_labels,
            device=self.device,
        )


def _pictures(
    model: nn.Module,
    monitor: _KnnMonitor,
    encoder: nn.Module,
    dataset: str | None,
    folder: Path,
    seed: int,
    log: Callable[[str], None],
) -> list[Path]:
    """Into ``folder``: embedding.png (the monitor's test features in 2-D by class),
    retrievals.png (6 test images, each with its 5 nearest memory-bank images) and, for a
    reconstruction method, reconstructions.png (8 test images); none without matplotlib."""
    from . import data
    from . import pretrain_plots as plots

    device = monitor.device
    bank, queries = (
        device.to_host(monitor.features(encoder, images))
        for images in (monitor.bank_images, monitor.query_images)
    )
    query_pixels = unit_pixels(device.to_host(monitor.query_images[:6]))
    bank_pixels = unit_pixels(device.to_host(monitor.bank_images))
    prefix = NORMALIZATION.get(dataset or "")
    mean, std = (
        (getattr(data, f"{prefix}_MEAN"), getattr(data, f"{prefix}_STD"))
        if prefix
        else (None, None)
    )
    try:
        written = [
            plots.embedding_map(
                queries, monitor.query_labels, folder / "embedding.png", method="tsne"
            ),
            plots.retrievals(
                query_pixels,
                bank_pixels,
                queries[:6],
                bank,
                folder / "retrievals.png",
                query_labels=monitor.query_labels[:6],
                gallery_labels=monitor.bank_labels,
            ),
        ]
        if hasattr(model, "reconstruct"):
            inputs = Tensor(monitor.prepare(monitor.query_images[:8]), device=device)
            shown, rebuilt = model.reconstruct(inputs, np.random.default_rng([seed, 5]))
            written.append(
                plots.reconstruction_grid(
                    inputs.numpy(),
                    shown.numpy(),
                    rebuilt.numpy(),
                    folder / "reconstructions.png",
                    mean=mean,
                    std=std,
                    row_names=(
                        "input",
                        model.input_name,
                        "reconstructed",
                    ),
                )
            )
    except ImportError as error:  # matplotlib is an optional extra
        log(f"no pictures: {error}")
        return []
    return written


def _build(
    method: str,
    encoder: nn.Module,
    images: np.ndarray,
    dataset: str | None,
    prepare: Callable[[Any], Any],
    device: Device,
    temperature: float,
) -> nn.Module:
    """The pretraining module of ``method`` around ``encoder`` (already on ``device``)."""
    if method != "simclr":
        return _reconstruction(method, encoder, images)
    from .data import ViewAugment

    if dataset in NORMALIZATION:
        augment = ViewAugment.for_dataset(dataset)
    else:
        augment = ViewAugment(int(images.shape[-1]), int(images.shape[1]))
    feature_dim = int(encode(encoder, images[:2], device, prepare).shape[1])
    return SimCLR(encoder, feature_dim, temperature=temperature, augment=augment)


def pretrain(
    method: str,
    model_name: str,
    train_set: Any,
    test_set: Any,
    *,
    dataset: str | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    temperature: float | None = None,
    encoder: str | None = None,
    weight_decay: float = 1e-4,
    seed: int = 0,
    device: Any = "cpu",
    out: str | os.PathLike | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    model_config: dict | None = None,
    labelled: Any = None,
    monitor_size: int = 5000,
    probe_size: int = 0,
    probe_epochs: int = 10,
    sync_batchnorm: bool = False,
) -> dict[str, Any]:
    """Pretrain model ``model_name`` (its :func:`pretrained_part`) by ``method`` on
    ``train_set``'s images.

    ``dataset`` (mnist, fashion-mnist, cifar10) picks the normalisation and the augmentation
    preset; ``encoder`` the part of the model trained (:func:`pretrained_part`); ``epochs``,
    ``batch_size``, ``lr``, ``temperature`` and ``encoder`` default to
    ``METHOD_DEFAULTS[method]``; ``model_config`` to the builder arguments that fit the images.
    The training loop reads ``train_set.images`` only. The monitors read ``labelled`` (default
    ``train_set``; anything with ``images`` and ``labels``) and ``test_set``: each epoch, a kNN
    accuracy with ``monitor_size`` images of each as memory bank and queries; at the end, a
    linear probe trained ``probe_epochs`` epochs on ``probe_size`` (0: all) labelled images.
    Returns the encoder, the pretraining module, the history and the config; with ``out``,
    writes the files listed in the module docstring. Raises ValueError for an unknown method or
    a method that cannot pretrain the model, NonFiniteLossError when the loss becomes NaN.

    Under ``mpiexec -n R`` the ranks pretrain one model (DistributedDataParallel; SimCLR
    contrasts the global batch, gathered from every rank; ``sync_batchnorm``: batch statistics
    of the global batch too); ``batch_size`` is the global batch. Rank 0 alone runs the
    monitors, writes the files and logs; the other ranks return after the last epoch."""
    check_method(method, model_name, encoder)
    settings = dict(METHOD_DEFAULTS[method])
    given = {
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "temperature": temperature,
        "encoder": encoder,
    }
    settings.update({key: value for key, value in given.items() if value is not None})
    group = distributed.init_process_group(device=device)
    if settings["batch_size"] % group.size:
        raise ValueError(
            f"batch_size {settings['batch_size']} is the global batch: it must divide evenly "
            f"over the {group.size} ranks"
        )
    main = group.rank == 0
    if not main:
        log, progress = _quiet, False
    device = get_device(device)
    images = train_set.images  # the training loop's only view of train_set: never its labels
    model_config = model_config or model_kwargs(model_name, images)
    fn_random.manual_seed(seed)
    classifier = models.create(model_name, **model_config)
    encoder = pretrained_part(settings["encoder"], classifier).to(device)
    prepare = _input_preparation(dataset, device)
    model = _build(method, encoder, images, dataset, prepare, device, settings["temperature"])
    model.to(device)
    if sync_batchnorm:  # in place: the encoder and the classifier holding it see it too
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    parallel = nn.DistributedDataParallel(model, group) if group.size > 1 else None
    optimizer = optim.AdamW(model.parameters(), lr=settings["lr"], weight_decay=weight_decay)
    steps = len(images) // min(settings["batch_size"], len(images))
    scheduler = _scheduler(optimizer, settings["epochs"] * steps)
    config = {
        "model": model_name,
        "kwargs": model_config,
        "pretrain": {"method": method, "dataset": dataset, "seed": seed, **settings},
        "ranks": group.size,
        "sync_batchnorm": sync_batchnorm,
    }
    labelled = train_set if labelled is None else labelled
    monitor = _KnnMonitor(labelled, test_set, monitor_size, seed, device, prepare)
    initial_knn = monitor(encoder) if main else math.nan
    log(f"kNN accuracy before pretraining: {100 * initial_knn:.2f}%")
    folder = Path(out) if out is not None and main else None
    files = RunFolder(folder, config) if folder is not None else None
    history: dict[str, list] = {}
    stored = device.upload(images)
    start = time.perf_counter()
    try:
        for epoch in range(1, settings["epochs"] + 1):

            def on_step(step: int, loss: float, lr: float, epoch: int = epoch) -> None:
                if files is not None:
                    files.log_step(epoch, step, (epoch - 1) * steps + step, loss, lr)

            trained = _pretrain_epoch(
                model,
                stored,
                prepare,
                optimizer,
                scheduler,
                device,
                batch_size=settings["batch_size"],
                seed=seed,
                epoch=epoch,
                epochs=settings["epochs"],
                progress=progress,
                on_step=on_step,
                parallel=parallel,
            )
            if parallel is not None:  # rank 0's running statistics, as the encoder file keeps
                parallel.sync_buffers()
            record = {"epoch": epoch, **trained, "knn_acc": monitor(encoder) if main else math.nan}
            record["elapsed"] = time.perf_counter() - start
            for key, value in record.items():
                history.setdefault(key, []).append(value)
            log(
                f"epoch {epoch}/{settings['epochs']}: {method} loss {record['loss']:.4f} "
                f"| kNN accuracy {100 * record['knn_acc']:.2f}% "
                f"| {record['seconds']:.1f}s, {record['images_per_second']:.0f} img/s"
            )
            if files is not None:
                files.log_epoch(history, epoch * steps)
    finally:
        if files is not None:
            files.close()
    if not main:
        return {"encoder": encoder, "model": model, "history": history, "config": config}
    probe_rows = _sample(len(labelled.images), probe_size, [seed, 4])
    probe = linear_probe(
        encode(encoder, labelled.images[probe_rows], device, prepare),
        labelled.labels[probe_rows],
        encode(encoder, test_set.images, device, prepare),
        test_set.labels,
        epochs=probe_epochs,
        seed=seed,
        device=device,
        progress=progress,
    )
    summary = {
        "initial_knn_acc": initial_knn,
        "linear_probe_acc": probe,
        "linear_probe_images": len(probe_rows),
    }
    written: list[Path] = []
    if folder is not None:
        _write_json(folder / "history.json", {**history, **summary})
        written.append(
            save_checkpoint(
                folder / "encoder.safetensors",
                classifier,
                epoch=settings["epochs"],
                config=config,
            )
        )
        written += _pictures(model, monitor, encoder, dataset, folder, seed, log)
    log(
        f"pretrained {model_name} by {method} in {time.perf_counter() - start:.0f}s: loss "
        f"{history['loss'][0]:.4f} -> {history['loss'][-1]:.4f}, kNN accuracy "
        f"{100 * initial_knn:.2f}% -> {100 * history['knn_acc'][-1]:.2f}%, linear probe "
        f"{100 * probe:.2f}% ({len(probe_rows):,} labelled images)"
        + (f"; encoder in {written[0]}" if written else "")
    )
    return {
        "encoder": encoder,
        "model": model,
        "history": history,
        "config": config,
        "files": written,
        **summary,
    }
