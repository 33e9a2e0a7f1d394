"""The monitors of self-supervised pretraining, on an encoder's frozen, flattened features.

* :func:`encode`: the features (N, D) of stored images, on the device, encoder in eval mode
  (:func:`unit_pixels`: stored images as float32 pixels in [0, 1]).
* :func:`knn_accuracy`: each query takes the k = 20 memory-bank features of highest cosine
  similarity s, and each votes for its class with weight exp(s / 0.07) (the weighted kNN of
  Wu et al. 2018, which SimCLR and MoCo reproductions report); the predicted class is the
  heaviest vote. One device-to-host read.
* :func:`linear_probe`: a fresh Linear on the frozen features, standardised by the probe
  training set's per-dimension mean and standard deviation (MAE's affine-free BatchNorm),
  trained by AdamW under a cosine schedule with fastnet's training loop, then scored on the
  test features.
* :func:`warmup_cosine`: the learning-rate factor of a linear warm-up then a cosine to zero.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from . import nn, optim
from .backend import Device, get_device
from .tensor import Tensor, no_grad
from .train import evaluate, train_epoch

__all__ = ["encode", "knn_accuracy", "linear_probe", "unit_pixels", "warmup_cosine"]

KNN_NEIGHBOURS = 20
KNN_TEMPERATURE = 0.07
ENCODE_BATCH = 512


def warmup_cosine(step: int, total: int, warmup: int) -> float:
    """The learning-rate factor at ``step`` of ``total``: linear from 1/warmup to 1 over the
    first ``warmup`` steps, then a cosine from 1 to 0 at the last step."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def unit_pixels(stored: Any) -> Any:
    """Stored images (an array: uint8, or floating used as is) as float32 pixels in [0, 1]."""
    if stored.dtype == np.uint8:
        return stored.astype(np.float32) * np.float32(1 / 255)
    return stored.astype(np.float32, copy=False)


def encode(
    encoder: nn.Module,
    images: Any,
    device: Any = "cpu",
    prepare: Callable[[Any], Any] = unit_pixels,
    batch_size: int = ENCODE_BATCH,
) -> Any:
    """The flattened features (N, D) float32 of stored ``images`` (on the host or ``device``)
    as a ``device`` array: ``prepare`` turns each batch of stored images (a device array) into
    the encoder's input (default: pixels in [0, 1]); ``encoder`` runs in eval mode, no graph."""
    device = get_device(device)
    was_training = encoder.training
    encoder.eval()
    stored = images if isinstance(images, device.xp.ndarray) else device.upload(images)
    parts = []
    with no_grad():
        for start in range(0, len(stored), batch_size):
            batch = Tensor(prepare(stored[start : start + batch_size]), device=device)
            features = encoder(batch).data
            parts.append(features.reshape(len(features), -1))
    encoder.train(was_training)
    return device.xp.concatenate(parts)


# ===================================================================== monitors
def knn_accuracy(
    bank: Any,
    bank_labels: Any,
    queries: Any,
    query_labels: Any,
    *,
    k: int = KNN_NEIGHBOURS,
    temperature: float = KNN_TEMPERATURE,
    device: Any = "cpu",
    chunk: int = 1024,
) -> float:
    """Weighted k-nearest-neighbour accuracy of ``queries`` (M, D) against ``bank`` (N, D)
    (device arrays or NumPy; labels host integers): features L2-normalised, the k
    most similar bank rows vote with weight exp(cosine / temperature). One device-to-host read."""
    device = get_device(device)
    xp = device.xp
    bank_labels, query_labels = np.asarray(bank_labels), np.asarray(query_labels)
    if len(bank) == 0 or len(queries) == 0:
        raise ValueError("knn_accuracy: the memory bank and the queries must not be empty")
    k = min(k, len(bank))
    classes = int(max(bank_labels.max(), query_labels.max())) + 1

    def unit_rows(features: Any) -> Any:
        features = device.asarray(features).astype(np.float32, copy=False)
        return features / xp.maximum(xp.linalg.norm(features, axis=1, keepdims=True), 1e-12)

    bank, queries = unit_rows(bank), unit_rows(queries)
    one_hot = device.upload(np.eye(classes, dtype=np.float32)[bank_labels])
    query_labels = device.upload(query_labels)
    correct = xp.zeros((), np.int64)
    for start in range(0, len(queries), chunk):
        similarity = queries[start : start + chunk] @ bank.T
        nearest = xp.argpartition(-similarity, k - 1, axis=1)[:, :k]
        weights = xp.exp((xp.take_along_axis(similarity, nearest, axis=1) - 1) / temperature)
        votes = (one_hot[nearest] * weights[:, :, None]).sum(axis=1)
        correct = correct + (votes.argmax(axis=1) == query_labels[start : start + chunk]).sum()
    return float(device.to_host(correct)) / len(queries)


class _FeatureBatches:
    """(features, labels) batches of device arrays for :func:`train_epoch` and
    :func:`evaluate`: each epoch's order (seeded by ``seed`` and the epoch) uploaded once, every
    labels Tensor carrying the labels' host range, so the loss never reads it back."""

    def __init__(
        self, features: Any, labels: np.ndarray, device: Device, batch_size: int, seed: int | None
    ) -> None:
        self.features, self.device, self.batch_size, self.seed = features, device, batch_size, seed
        self.labels = device.upload(labels.astype(np.int64))
        self.label_range = (int(labels.min()), int(labels.max()))
        self.epoch = 0

    def __len__(self) -> int:
        return -(-len(self.labels) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        count = len(self.labels)
        if self.seed is None:  # evaluation: in order
            order = None
        else:
            order = self.device.upload(
                np.random.default_rng([self.seed, self.epoch]).permutation(count)
            )
        self.epoch += 1
        for start in range(0, count, self.batch_size):
            rows = (
                slice(start, start + self.batch_size)
                if order is None
                else order[start : start + self.batch_size]
            )
            labels = Tensor(self.labels[rows], device=self.device)
            labels._value_range = self.label_range  # as DeviceDataLoader: proven on the host
            yield Tensor(self.features[rows], device=self.device), labels


def linear_probe(
    train_features: Any,
    train_labels: np.ndarray,
    test_features: Any,
    test_labels: np.ndarray,
    *,
    epochs: int = 10,
    batch_size: int = 256,
    lr: float = 1e-2,
    weight_decay: float = 1e-4,
    seed: int = 0,
    device: Any = "cpu",
    progress: bool = False,
) -> float:
    """Test accuracy of a Linear trained on frozen features (N, D) (device arrays or NumPy) with
    ``train_labels`` (host integers): features standardised by the training features' mean and
    standard deviation per dimension, AdamW under a cosine schedule to zero, the batches in an
    order drawn from ``seed`` (the Linear's initial weights from fastnet's generator)."""
    device = get_device(device)
    train_features = device.asarray(train_features).astype(np.float32, copy=False)
    mean = train_features.mean(axis=0)
    scale = 1 / (train_features.std(axis=0) + np.float32(1e-6))
    standardized = [
        (device.asarray(features).astype(np.float32, copy=False) - mean) * scale
        for features in (train_features, test_features)
    ]
    classes = int(max(np.max(train_labels), np.max(test_labels))) + 1
    probe = nn.Linear(standardized[0].shape[1], classes).to(device)
    optimizer = optim.AdamW(probe.parameters(), lr=lr, weight_decay=weight_decay)
    batches = _FeatureBatches(standardized[0], np.asarray(train_labels), device, batch_size, seed)
    scheduler = optim.LambdaLR(
        optimizer, functools.partial(warmup_cosine, total=epochs * len(batches), warmup=1)
    )
    for epoch in range(1, epochs + 1):
        train_epoch(
            probe,
            batches,
            optimizer,
            device,
            scheduler=scheduler,
            description=f"linear probe {epoch}/{epochs}",
            progress=progress,
            epoch=epoch,
        )
    test = _FeatureBatches(standardized[1], np.asarray(test_labels), device, ENCODE_BATCH, None)
    return evaluate(probe, test, device)["accuracy"]
