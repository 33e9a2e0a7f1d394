"""Batched transforms against loop-per-image references, and the normalisation constants."""

from __future__ import annotations

import numpy as np
import pytest

import fastnet.random
from fastnet.data import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    FASHION_MNIST_MEAN,
    FASHION_MNIST_STD,
    MNIST,
    MNIST_MEAN,
    MNIST_STD,
    Compose,
    FashionMNIST,
    Normalize,
    RandomCrop,
    RandomHorizontalFlip,
)


def test_normalize_matches_a_per_channel_loop(rng):
    batch = rng.random((5, 3, 7, 9), dtype=np.float32)
    mean, std = (0.1, 0.5, 0.9), (0.2, 0.3, 0.7)
    got = Normalize(mean, std)(batch)
    assert got.dtype == np.float32 and got.shape == batch.shape
    reference = np.empty(batch.shape, np.float64)
    for image in range(5):
        for channel in range(3):
            reference[image, channel] = (
                batch[image, channel].astype(np.float64) - mean[channel]
            ) / std[channel]
    assert np.max(np.abs(got - reference)) / np.max(np.abs(reference)) < 1e-6  # float32 rounding


def test_normalize_with_batch_statistics_gives_zero_mean_unit_std(rng):
    batch = (
        rng.standard_normal((64, 3, 8, 8)) * [[[2.0]], [[0.5]], [[3.0]]]
        + [[[1.0]], [[-4.0]], [[0.3]]]
    ).astype(np.float32)
    mean, std = batch.mean(axis=(0, 2, 3)), batch.std(axis=(0, 2, 3))
    out = Normalize(mean, std)(batch)
    np.testing.assert_allclose(out.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=(0, 2, 3)), 1, atol=1e-5)


@pytest.mark.parametrize(
    "dataset_class, mean, std",
    [(MNIST, MNIST_MEAN, MNIST_STD), (FashionMNIST, FASHION_MNIST_MEAN, FASHION_MNIST_STD)],
)
def test_published_constants_are_the_training_set_statistics(shared_data, dataset_class, mean, std):
    counts = np.bincount(dataset_class(root=shared_data, train=True).images.ravel(), minlength=256)
    values = np.arange(256) / 255
    pixel_mean = np.sum(values * counts) / counts.sum()
    pixel_std = np.sqrt(np.sum((values - pixel_mean) ** 2 * counts) / counts.sum())
    assert abs(pixel_mean - mean[0]) < 1e-4 and abs(pixel_std - std[0]) < 1e-4


def test_cifar_constants_have_three_channels():
    assert len(CIFAR10_MEAN) == len(CIFAR10_STD) == 3 and all(0 < s < 0.5 for s in CIFAR10_STD)


def test_normalize_errors(rng):
    with pytest.raises(ValueError, match="1 channels, the batch \\(2, 3, 4, 4\\) has 3"):
        Normalize((0.5,), (0.2,))(rng.random((2, 3, 4, 4)))
    with pytest.raises(ValueError, match="positive"):
        Normalize((0.5,), (0.0,))
    with pytest.raises(ValueError, match="2 means but 1 standard"):
        Normalize((0.5, 0.1), (0.2,))
    with pytest.raises(ValueError, match="expects a batch array"):
        Normalize((0.5,), (0.2,))(rng.random((3, 4, 4)))
    with pytest.raises(TypeError, match="floating"):
        Normalize((0.5,), (0.2,))(np.zeros((1, 1, 2, 2), np.uint8))


def _crop_offsets(batch, out, padding):
    """Loop reference: for each image, the offsets of the padded image whose window equals the
    output."""
    padded = np.pad(batch, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    height, width = out.shape[2:]
    offsets = []
    for image in range(len(batch)):
        matches = [
            (top, left)
            for top in range(padded.shape[2] - height + 1)
            for left in range(padded.shape[3] - width + 1)
            if np.array_equal(padded[image, :, top : top + height, left : left + width], out[image])
        ]
        assert len(matches) == 1, (
            f"image {image}: output is not exactly one crop of its input ({matches})"
        )
        offsets.append(matches[0])
    return offsets


@pytest.mark.parametrize(
    "size, padding, shape",
    [(6, 2, (150, 3, 6, 6)), ((3, 5), 0, (60, 2, 5, 7)), (7, 1, (40, 1, 7, 7))],
)
def test_random_crop_is_a_crop_at_every_offset(rng, size, padding, shape):
    batch = rng.random(shape, dtype=np.float32) + 0.5  # no pixel equals the zero padding
    crop = RandomCrop(size, padding)
    out = crop(batch, np.random.default_rng(1))
    height, width = crop.size
    assert out.shape == (shape[0], shape[1], height, width) and out.dtype == batch.dtype
    offsets = _crop_offsets(batch, out, padding)
    every = {
        (top, left)
        for top in range(shape[2] + 2 * padding - height + 1)
        for left in range(shape[3] + 2 * padding - width + 1)
    }
    assert set(offsets) == every  # offsets are drawn per image and cover the whole range
    np.testing.assert_array_equal(out, crop(batch, np.random.default_rng(1)))


def test_random_crop_error(rng):
    with pytest.raises(ValueError, match="does not fit"):
        RandomCrop(9, padding=0)(rng.random((2, 1, 8, 8)))
    with pytest.raises(ValueError, match="padding"):
        RandomCrop(4, padding=-1)


@pytest.mark.parametrize("p", [0.0, 0.3, 1.0])
def test_horizontal_flip_matches_a_loop_reference(rng, p):
    batch = rng.random((300, 2, 3, 5), dtype=np.float32)
    out = RandomHorizontalFlip(p)(batch, np.random.default_rng(7))
    flipped = np.random.default_rng(7).random(300) < p
    reference = np.stack(
        [image[:, :, ::-1] if flip else image for image, flip in zip(batch, flipped, strict=True)]
    )
    np.testing.assert_array_equal(out, reference)
    assert abs(flipped.mean() - p) < 0.1


def test_compose_applies_in_order_with_one_generator(rng):
    batch = rng.random((10, 3, 8, 8), dtype=np.float32)
    steps = [RandomCrop(6, 1), RandomHorizontalFlip(), Normalize(CIFAR10_MEAN, CIFAR10_STD)]
    got = Compose(steps)(batch, np.random.default_rng(3))
    by_hand, generator = batch, np.random.default_rng(3)
    for step in steps:
        by_hand = step(by_hand, generator)
    np.testing.assert_array_equal(got, by_hand)


def test_without_a_generator_random_transforms_follow_the_framework_seed(rng):
    batch = rng.random((20, 1, 6, 6), dtype=np.float32)
    augment = Compose([RandomCrop(4, 1), RandomHorizontalFlip()])
    fastnet.random.manual_seed(8)
    first = augment(batch)
    fastnet.random.manual_seed(8)
    np.testing.assert_array_equal(augment(batch), first)
    assert not np.array_equal(augment(batch), first)
