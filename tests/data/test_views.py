"""ViewAugment: seeded random views on both devices, each step of a view against what it must
do (the identity returns the input, erasing zeroes its rectangle, noise and jitter as drawn),
the draws within their ranges, and clear errors for bad arguments.

Images are random normal values shifted away from 0 (never zeros), in odd sizes; the simulator
tests use a handful of tiny images (the warp is one grid-stride launch of at most 2 blocks).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import fastnet as fn
from fastnet.data import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    FASHION_MNIST_MEAN,
    MNIST_MEAN,
    MNIST_STD,
    ViewAugment,
)
from fastnet.kernels import _cuda
from fastnet.kernels._cuda import simulating
from fastnet.kernels.warp import reference_affine_warp
from numerics import assert_close

SIZE = (9, 11)  # (H, W)
IDENTITY_GEOMETRY = dict(crop_scale=(1.0, 1.0), rotation=0.0, translate=0.0)


def images_of(batch: int, channels: int, size=SIZE, seed: int = 0, device: str = "cpu"):
    values = np.random.default_rng(seed).normal(0.5, 1.0, (batch, channels, *size))
    values += np.sign(values) * 0.01  # no exact zeros: erasing must be what makes them
    return fn.Tensor(values.astype(np.float32), device=device)


def full_augment(channels: int = 3, **overrides) -> ViewAugment:
    """Every step on: crop, rotation, shear, shift, flip, jitter, noise, erasing."""
    settings = dict(
        crop_scale=(0.3, 1.0),
        rotation=20.0,
        translate=0.1,
        shear=10.0,
        flip=True,
        noise=0.1,
        erase=0.5,
        color_jitter=0.4 if channels == 3 else 0.0,
        mean=CIFAR10_MEAN[:channels],
        std=CIFAR10_STD[:channels],
    )
    return ViewAugment(SIZE, channels, **{**settings, **overrides})


# ------------------------------------------------------------------ seeds, shapes, devices


def test_the_same_seed_gives_the_same_views():
    augment, images = full_augment(), images_of(6, 3)
    first = augment(images, np.random.default_rng(7)).numpy()
    np.testing.assert_array_equal(first, augment(images, np.random.default_rng(7)).numpy())


def test_successive_calls_and_the_two_views_differ():
    augment, images = full_augment(), images_of(6, 3)
    rng = np.random.default_rng(8)
    first, second = augment(images, rng).numpy(), augment(images, rng).numpy()
    view1, view2 = (view.numpy() for view in augment.two_views(images, rng))
    for a, b in ((first, second), (view1, view2)):
        assert all(not np.allclose(a[i], b[i]) for i in range(len(a)))


def test_unseeded_calls_follow_the_framework_seed():
    augment, images = full_augment(), images_of(4, 3)
    fn.manual_seed(3)
    first = augment(images).numpy()
    fn.manual_seed(3)
    np.testing.assert_array_equal(first, augment(images).numpy())


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_a_view_is_a_new_float32_tensor_of_the_same_shape_and_device(device):
    images = images_of(3, 1, device=device)
    before = images.numpy().copy()
    view = full_augment(1)(images, np.random.default_rng(0))
    assert isinstance(view, fn.Tensor) and view is not images
    assert view.shape == images.shape and view.dtype == np.float32 and view.device == device
    assert view.data is not images.data and not view.requires_grad
    np.testing.assert_array_equal(images.numpy(), before)  # the input is left alone


@pytest.mark.parametrize("channels", [1, 3])
def test_the_cuda_device_gives_the_cpu_views(channels):
    augment = full_augment(channels)
    cpu = augment(images_of(3, channels), np.random.default_rng(11)).numpy()
    cuda = augment(images_of(3, channels, device="cuda"), np.random.default_rng(11)).numpy()
    if simulating():  # the same float32 operations in the same order
        np.testing.assert_array_equal(cuda, cpu)
    else:  # a GPU may fuse multiply-adds in the warp's coordinates
        assert_close(cuda, cpu, np.float32, tolerance=1e-5)


def test_the_cuda_device_uploads_once_and_launches_once_per_view():
    device = fn.backend.get_device("cuda")
    images = images_of(2, 3, device="cuda")
    device.transfers.reset()
    launches = _cuda.launches.count
    full_augment()(images, np.random.default_rng(0))
    assert (device.transfers.to_device, device.transfers.to_host) == (1, 0)
    assert _cuda.launches.count - launches == 1


# ------------------------------------------------------------------ each step


def test_identity_settings_return_the_input():
    images = images_of(5, 3)
    view = ViewAugment(SIZE, 3, **IDENTITY_GEOMETRY)(images, np.random.default_rng(0))
    np.testing.assert_array_equal(view.numpy(), images.numpy())


def test_the_warp_samples_the_drawn_matrices():
    augment, images = ViewAugment(SIZE, 2, shear=20.0, flip=True), images_of(4, 2)
    draws = augment.draw(4, np.random.default_rng(5))
    view = augment(images, np.random.default_rng(5)).numpy()
    assert_close(view, reference_affine_warp(images.numpy(), draws.matrices, SIZE), np.float32)


def test_flips_mirror_about_half_of_the_images():
    images = images_of(16, 1).numpy()
    view = ViewAugment(SIZE, 1, **IDENTITY_GEOMETRY, flip=True)(
        fn.Tensor(images), np.random.default_rng(1)
    ).numpy()
    mirrored = [np.array_equal(v, x[..., ::-1]) for v, x in zip(view, images, strict=True)]
    kept = [np.array_equal(v, x) for v, x in zip(view, images, strict=True)]
    assert all(m != k for m, k in zip(mirrored, kept, strict=True))
    assert 2 <= sum(mirrored) <= 14


def test_erasing_zeroes_one_rectangle_and_nothing_else():
    augment, images = ViewAugment(SIZE, 3, **IDENTITY_GEOMETRY, erase=1.0), images_of(6, 3)
    draws = augment.draw(6, np.random.default_rng(2))
    view = augment(images, np.random.default_rng(2)).numpy()
    for b, (top, bottom, left, right) in enumerate(draws.erase_boxes.astype(int)):
        assert 0 <= top < bottom <= SIZE[0] and 0 <= left < right <= SIZE[1]
        inside = np.zeros(SIZE, bool)
        inside[top:bottom, left:right] = True
        zeros = np.all(view[b] == 0, axis=0)
        np.testing.assert_array_equal(zeros, inside)
        np.testing.assert_array_equal(view[b][:, ~inside], images.numpy()[b][:, ~inside])


def test_noise_is_the_drawn_normal_times_its_std():
    augment, images = ViewAugment(SIZE, 2, **IDENTITY_GEOMETRY, noise=0.2), images_of(40, 2)
    draws = augment.draw(40, np.random.default_rng(4))
    view = augment(images, np.random.default_rng(4)).numpy()
    added = view.astype(np.float64) - images.numpy()
    assert_close(added, 0.2 * draws.noise.astype(np.float64), np.float64, tolerance=1e-6)
    assert abs(added.std() - 0.2) < 0.01 and abs(added.mean()) < 0.01


def reference_jitter(pixels: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """torchvision's adjust_brightness, adjust_contrast, adjust_saturation in turn, float64."""
    weights = np.array([0.299, 0.587, 0.114]).reshape(3, 1, 1)
    out = []
    for image, (brightness, contrast, saturation) in zip(pixels, factors, strict=True):
        image = np.clip(image * brightness, 0, 1)
        grey_mean = (image * weights).sum(axis=0).mean()
        image = np.clip(contrast * image + (1 - contrast) * grey_mean, 0, 1)
        grey = (image * weights).sum(axis=0)
        out.append(np.clip(saturation * image + (1 - saturation) * grey, 0, 1))
    return np.stack(out)


def test_colour_jitter_acts_on_the_pixels_behind_the_normalisation():
    mean, std = np.array(CIFAR10_MEAN), np.array(CIFAR10_STD)
    pixels = np.random.default_rng(6).uniform(0.05, 0.95, (5, 3, *SIZE))
    normalised = ((pixels - mean.reshape(3, 1, 1)) / std.reshape(3, 1, 1)).astype(np.float32)
    augment = ViewAugment(
        SIZE, 3, **IDENTITY_GEOMETRY, color_jitter=0.5, mean=CIFAR10_MEAN, std=CIFAR10_STD
    )
    draws = augment.draw(5, np.random.default_rng(9))
    view = augment(fn.Tensor(normalised), np.random.default_rng(9)).numpy()
    jittered = reference_jitter(
        normalised * std.reshape(3, 1, 1) + mean.reshape(3, 1, 1), draws.jitter
    )
    expected = (jittered - mean.reshape(3, 1, 1)) / std.reshape(3, 1, 1)
    assert_close(view, expected, np.float32)
    assert not np.allclose(view, normalised, atol=1e-3)


# ------------------------------------------------------------------ the draws


def test_draws_stay_in_their_ranges():
    batch = 2000
    augment = ViewAugment(
        SIZE,
        3,
        crop_scale=(0.3, 0.8),
        rotation=20.0,
        translate=0.1,
        shear=10.0,
        flip=True,
        erase=0.25,
        color_jitter=0.4,
    )
    draws = augment.draw(batch, np.random.default_rng(12))
    linear = draws.matrices[:, :, :2].astype(np.float64)
    # |det| of the output -> input map: the crop's area fraction (rotation and shear keep area)
    area = np.abs(np.linalg.det(linear))
    assert area.min() >= 0.3 - 1e-5 and area.max() <= 0.8 + 1e-5
    assert area.min() < 0.32 and area.max() > 0.78
    mirrored = np.linalg.det(linear) < 0
    assert 0.45 < mirrored.mean() < 0.55
    # every output pixel centre maps inside the image, give or take the shift, rotation and shear
    centre = np.array([(SIZE[1] - 1) / 2, (SIZE[0] - 1) / 2, 1.0])
    mapped_centre = draws.matrices.astype(np.float64) @ centre
    assert np.all(np.abs(mapped_centre - centre[:2]) <= [SIZE[1] * 0.7, SIZE[0] * 0.7])
    erased = draws.erase_boxes[:, 1] > draws.erase_boxes[:, 0]
    assert 0.21 < erased.mean() < 0.29
    boxes = draws.erase_boxes[erased]
    box_area = (boxes[:, 1] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 2]) / (SIZE[0] * SIZE[1])
    assert box_area.min() > 0 and box_area.max() <= 0.5  # 2-33%, rounded to whole pixels
    assert draws.jitter.min() >= 0.6 and draws.jitter.max() <= 1.4
    assert draws.jitter.min() < 0.62 and draws.jitter.max() > 1.38
    assert draws.noise is None


def test_rotations_span_the_range_and_no_more():
    augment = ViewAugment(SIZE, 1, crop_scale=(1.0, 1.0), rotation=15.0, translate=0.0)
    matrices = augment.draw(1000, np.random.default_rng(13)).matrices.astype(np.float64)
    degrees = np.rad2deg(np.arctan2(matrices[:, 1, 0], matrices[:, 0, 0]))
    assert np.abs(degrees).max() <= 15 + 1e-4 and degrees.min() < -14 and degrees.max() > 14
    # rotations turn about the centre: it maps to itself
    centre = np.array([(SIZE[1] - 1) / 2, (SIZE[0] - 1) / 2, 1.0])
    assert_close(matrices @ centre, np.broadcast_to(centre[:2], (1000, 2)), np.float64, 1e-6)


def test_shifts_span_the_translate_fraction_of_each_side():
    augment = ViewAugment(SIZE, 1, crop_scale=(1.0, 1.0), rotation=0.0, translate=0.2)
    shifts = augment.draw(1000, np.random.default_rng(14)).matrices[:, :, 2].astype(np.float64)
    limits = 0.2 * np.array([SIZE[1], SIZE[0]])
    assert np.all(np.abs(shifts) <= limits + 1e-5)
    assert np.all(shifts.max(axis=0) > 0.95 * limits) and np.all(
        shifts.min(axis=0) < -0.95 * limits
    )


# ------------------------------------------------------------------ presets and errors


def test_presets():
    mnist = ViewAugment.for_dataset("mnist")
    assert (mnist.image_size, mnist.channels, mnist.crop_scale) == ((28, 28), 1, (0.35, 1.0))
    assert (mnist.rotation, mnist.translate, mnist.flip, mnist.color_jitter) == (
        15.0,
        0.1,
        False,
        0,
    )
    assert (
        mnist.erase > 0 and mnist.noise > 0 and mnist.mean == MNIST_MEAN and mnist.std == MNIST_STD
    )
    assert ViewAugment.for_dataset("fashion-mnist").mean == FASHION_MNIST_MEAN
    cifar = ViewAugment.for_dataset("cifar10")
    assert (cifar.image_size, cifar.channels, cifar.crop_scale) == ((32, 32), 3, (0.2, 1.0))
    assert (cifar.flip, cifar.color_jitter, cifar.rotation) == (True, 0.4, 0.0)
    assert ViewAugment.for_dataset("mnist", erase=0.0, noise=0.0).erase == 0.0
    view = mnist(images_of(2, 1, size=(28, 28)), np.random.default_rng(0))
    assert view.shape == (2, 1, 28, 28) and np.isfinite(view.numpy()).all()


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        (dict(image_size=0), ValueError, "image_size"),
        (dict(channels=0), ValueError, "channels"),
        (dict(crop_scale=(0.0, 1.0)), ValueError, "crop_scale"),
        (dict(crop_scale=(0.8, 0.5)), ValueError, "crop_scale"),
        (dict(crop_scale=0.5), TypeError, "crop_scale"),
        (dict(rotation=-1.0), ValueError, "rotation"),
        (dict(translate=1.5), ValueError, "translate"),
        (dict(erase=2.0), ValueError, "erase"),
        (dict(noise=-0.1), ValueError, "noise"),
        (dict(noise=math.inf), ValueError, "noise"),
        (dict(channels=1, color_jitter=0.4), ValueError, "3-channel"),
        (dict(mean=(0.5, 0.5)), ValueError, "mean"),
        (dict(std=(1.0, 0.0, 1.0)), ValueError, "std"),
    ],
)
def test_bad_settings_raise_naming_them(arguments, error, message):
    with pytest.raises(error, match=message):
        ViewAugment(**{"image_size": SIZE, "channels": 3, **arguments})


def test_bad_images_and_presets_raise_naming_them():
    augment = ViewAugment(SIZE, 3)
    with pytest.raises(ValueError, match="no preset for 'imagenet'"):
        ViewAugment.for_dataset("imagenet")
    with pytest.raises(TypeError, match="Tensor"):
        augment(images_of(2, 3).numpy())
    with pytest.raises(ValueError, match=r"\(B, 3, 9, 11\)"):
        augment(images_of(2, 1))
    with pytest.raises(ValueError, match="float32"):
        augment(fn.Tensor(images_of(2, 3).numpy().astype(np.float64), dtype=np.float64))
