"""The distillation students (fastnet.models.students): registry names, output shapes on MNIST-
and CIFAR-sized images, parameter counts (at most a tenth of the MNIST CNN's), depthwise layers,
and one training step that lowers the loss."""

from __future__ import annotations

import numpy as np
import pytest

import fastnet as fn
import fastnet.functional as F
from fastnet import models, nn, optim

STUDENTS = ["small-cnn", "dw-cnn"]


@pytest.mark.parametrize("name", STUDENTS)
@pytest.mark.parametrize("channels,side", [(1, 28), (3, 32)])
def test_output_shape(name, channels, side, rng):
    model = models.create(name, channels=channels, image_size=side, classes=10)
    assert isinstance(model, models.Classifier)
    x = fn.tensor(rng.standard_normal((3, channels, side, side)).astype(np.float32))
    assert model(x).shape == (3, 10)


def test_parameter_counts():
    teacher = models.create("cnn", channels=1, image_size=28, classes=10).num_parameters()
    small = models.create("small-cnn", channels=1, image_size=28, classes=10)
    # conv 1→8 (80), conv 8→16 (1168), linear 16·7·7→10 (7850)
    assert small.num_parameters() == 80 + 1168 + 7850
    depthwise = models.create("dw-cnn", channels=1, image_size=28, classes=10)
    for student in (small, depthwise):
        assert student.num_parameters() * 10 <= teacher


def test_dw_cnn_is_depthwise_separable():
    model = models.dw_cnn()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    depthwise = [c for c in convs if c.groups > 1]
    pointwise = [c for c in convs if c.kernel_size == (1, 1)]
    assert len(depthwise) == 3 and len(pointwise) == 3
    assert all(c.groups == c.in_channels == c.out_channels for c in depthwise)


def test_widths_are_configurable():
    model = models.small_cnn(widths=(4, 8, 12), image_size=32, channels=3)
    assert model(fn.tensor(np.zeros((1, 3, 32, 32), np.float32))).shape == (1, 10)


@pytest.mark.parametrize("name", STUDENTS)
def test_a_train_step_lowers_the_loss(name, rng):
    fn.manual_seed(0)
    model = models.create(name)
    x = fn.tensor(rng.standard_normal((16, 1, 28, 28)).astype(np.float32))
    y = fn.tensor(rng.integers(0, 10, 16))
    optimizer = optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(5):
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert all(p.grad is not None for p in model.parameters())
