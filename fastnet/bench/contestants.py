"""The models the training race runs (:func:`train_models`), and one fastnet training step of
any of them (:func:`training_step`) for the scripts in benchmarks/ that time steps alone."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import nn as fnn
from ..functional import cross_entropy
from ..tensor import Tensor


@dataclass(frozen=True)
class TrainModel:
    """A model whose training fastnet and PyTorch race: built by fastnet, mirrored in PyTorch."""

    name: str
    build: Callable[[], Any]
    sample_shape: tuple[int, ...]
    batches: tuple[int, ...]
    classes: int = 10


class SequenceClassifier(fnn.Module):
    """One transformer encoder layer over (B, T, d_model), the mean over T, then a Linear to the
    classes: the transformer of the training race. No dropout, so both frameworks compute the
    same."""

    def __init__(
        self, d_model: int = 128, heads: int = 4, feedforward: int = 256, classes: int = 10
    ) -> None:
        super().__init__()
        self.encoder = fnn.TransformerEncoderLayer(
            d_model, heads, feedforward, dropout=0.0, batch_first=True
        )
        self.head = fnn.Linear(d_model, classes)

    def forward(self, x: Any) -> Any:
        return self.head(self.encoder(x).mean(axis=1))


def train_models() -> list[TrainModel]:
    """The models ``--train`` races (one line each; a new layer type also needs a
    :data:`TORCH_EQUIVALENTS` entry). The CIFAR ResNet is ResNet-20; the transformer one encoder
    layer, d_model 128, 4 heads, feed-forward 256, on sequences of 64."""
    from .. import models

    return [
        TrainModel("mnist_cnn", models.mnist_cnn, (1, 28, 28), (64, 256)),
        TrainModel("mlp", models.mlp, (1, 28, 28), (64, 256)),
        TrainModel("resnet20", functools.partial(models.create, "resnet"), (3, 32, 32), (128,)),
        TrainModel("transformer", SequenceClassifier, (64, 128), (32,)),
    ]


def training_step(model: str, batch: int, seed: int = 0) -> Callable[[], None]:
    """One fastnet training step of the race's model named ``model`` (:func:`train_models`) on a
    fixed random batch, Adam lr 1e-3: what the scripts in benchmarks/ time step by step. A
    ValueError names the models when ``model`` is none of them."""
    import fastnet

    entries = {entry.name: entry for entry in train_models()}
    if model not in entries:
        raise ValueError(f"unknown model {model!r}: expected one of {', '.join(entries)}")
    entry = entries[model]
    fastnet.manual_seed(seed)
    network = entry.build()
    optimizer = fastnet.optim.Adam(network.parameters(), lr=1e-3)
    rng = np.random.default_rng(seed)
    x = Tensor(rng.standard_normal((batch, *entry.sample_shape), dtype=np.float32))
    y = Tensor(rng.integers(0, entry.classes, batch))

    def step() -> None:
        loss = cross_entropy(network(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step
