"""The vision transformer of fastnet.models: structure, names, gradients end to end, errors, and
that it can fit data."""

import numpy as np
import pytest

import fastnet as fn
import fastnet.functional as F
from fastnet import models, optim
from fastnet.gradcheck import gradcheck
from fastnet.models.vit import ViT


def test_vit_is_registered_with_a_features_head_split(rng):
    model = models.create("vit", image_size=28, patch_size=7, channels=1, classes=10)
    assert isinstance(model, ViT) and isinstance(model, models.Classifier)
    images = fn.tensor(rng.standard_normal((3, 1, 28, 28)))
    assert model.features(images).shape == (3, 128)
    assert model(images).shape == (3, 10)
    assert (model.head.in_features, model.head.out_features) == (128, 10)
    names = set(model.state_dict())
    assert {
        "features.class_token",
        "features.positions.weight",
        "features.patch_embedding.projection.weight",
        "features.encoder.layers.3.self_attn.in_proj_weight",
        "features.encoder.norm.weight",
        "head.weight",
    } <= names
    assert all(name.startswith(("features.", "head.")) for name in names)


def test_vit_parameter_count():
    dim, depth, mlp, patches, classes = 16, 2, 24, 16, 3
    model = ViT(
        image_size=8,
        patch_size=2,
        channels=3,
        classes=classes,
        dim=dim,
        depth=depth,
        heads=4,
        mlp_dim=mlp,
    )
    per_layer = (
        (3 * dim * dim + 3 * dim)
        + (dim * dim + dim)
        + (dim * mlp + mlp)
        + (mlp * dim + dim)
        + 4 * dim
    )
    expected = (
        (3 * 2 * 2 * dim + dim)
        + dim
        + (patches + 1) * dim
        + depth * per_layer
        + 2 * dim
        + (dim * classes + classes)
    )
    assert model.num_parameters() == expected
    assert (
        ViT(dim=16, heads=4).features.encoder.layers[0].linear1.out_features == 32
    )  # mlp_dim defaults to 2·dim


def test_vit_gradients_end_to_end(rng):
    model = ViT(
        image_size=4, patch_size=2, channels=2, classes=3, dim=4, depth=1, heads=2, mlp_dim=6
    )
    for parameter in model.parameters():
        parameter.data = parameter.data.astype(np.float64)
    images = fn.tensor(rng.standard_normal((2, 2, 4, 4)), dtype=np.float64, requires_grad=True)
    features = model.features
    checked = [
        images,
        features.class_token,
        features.positions.weight,
        features.patch_embedding.projection.weight,
    ]
    assert gradcheck(lambda images, *parameters: model(images), checked)


def test_vit_errors(rng):
    with pytest.raises(ValueError, match="image_size 28 must be a multiple of patch_size 5"):
        ViT(patch_size=5)
    with pytest.raises(ValueError, match="dim 30 must be divisible by heads 4"):
        ViT(dim=30)
    with pytest.raises(
        ValueError, match=r"images of shape \(2, 3, 28, 28\) do not match \(B, 1, 28, 28\)"
    ):
        ViT(dim=8, depth=1, heads=2)(fn.tensor(np.ones((2, 3, 28, 28))))


def test_vit_fits_a_small_batch(rng):
    fn.manual_seed(0)
    model = ViT(image_size=8, patch_size=4, channels=1, classes=4, dim=16, depth=1, heads=2)
    images = fn.tensor(rng.standard_normal((16, 1, 8, 8)))
    labels = rng.integers(0, 4, 16)
    optimizer = optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(60):
        loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    assert (model(images).numpy().argmax(1) == labels).mean() == 1.0, (
        f"final loss {loss.item():.4f}"
    )
