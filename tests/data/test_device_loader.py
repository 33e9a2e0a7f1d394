"""DeviceDataLoader: the same batches as DataLoader with the same arguments, built on the device
from the epoch's draws, with one upload per epoch and one kernel launch per batch.

The cuda device runs in Numba's simulator here (tests/conftest.py): each batch is a real launch
of the augment kernel, so the cuda cases keep to a few batches of tiny images.
"""

from __future__ import annotations

import numpy as np
import pytest

import fastnet
from fastnet.backend import get_device
from fastnet.data import (
    ArrayDataset,
    Compose,
    DataLoader,
    DeviceDataLoader,
    Normalize,
    RandomCrop,
    RandomHorizontalFlip,
)
from fastnet.kernels import _cuda
from fastnet.kernels.augment import reference_augment_batch
from numerics import assert_close

CLASSES = 4
SHAPE = (3, 7, 9)  # (C, H, W): odd sides
MEAN, STD = (0.45, 0.5, 0.4), (0.25, 0.3, 0.2)


def cifar_like(padding: int = 2) -> Compose:
    """train_transform's pipeline for CIFAR-10, on small images."""
    return Compose(
        [RandomCrop(SHAPE[1:], padding=padding), RandomHorizontalFlip(), Normalize(MEAN, STD)]
    )


def make_dataset(count: int = 23, dtype=np.uint8, transform=None, seed: int = 0) -> ArrayDataset:
    rng = np.random.default_rng(seed)
    if dtype == np.uint8:
        images = rng.integers(0, 256, (count, *SHAPE), dtype=np.uint8)
    else:
        images = rng.uniform(-1.0, 2.0, (count, *SHAPE)).astype(dtype)
    labels = rng.integers(0, CLASSES, count)
    return ArrayDataset(images, labels, transform, classes=[f"c{i}" for i in range(CLASSES)])


def host_batches(loader) -> list[tuple[np.ndarray, np.ndarray]]:
    """One epoch of a loader as NumPy (images, labels) pairs."""
    return [(images.numpy(), labels.numpy()) for images, labels in loader]


def assert_same_batches(got, expected) -> None:
    assert len(got) == len(expected)
    for (images, labels), (want_images, want_labels) in zip(got, expected, strict=True):
        assert images.dtype == np.float32 and labels.dtype == np.int64
        np.testing.assert_array_equal(images, want_images)
        np.testing.assert_array_equal(labels, want_labels)


# ------------------------------------------------------------------ the same batches as DataLoader


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_batches_equal_the_host_loader(device):
    """Shuffled, cropped with padding, flipped and normalised, a short last batch: the batches of
    DataLoader with the same seed and transform, to the bit, for two epochs on the CPU."""
    dataset = make_dataset()
    arguments = {"batch_size": 8, "shuffle": True, "seed": 3, "transform": cifar_like()}
    ours = DeviceDataLoader(dataset, device=device, **arguments)
    host = DataLoader(dataset, **arguments)
    for _ in range(2 if device == "cpu" else 1):
        batches = [(images, labels) for images, labels in ours]
        assert all(
            images.device == device and labels.device == device for images, labels in batches
        )
        assert [len(labels) for _, labels in batches] == [8, 8, 7]
        assert_same_batches(host_batches(batches), host_batches(host))


def test_float_images_and_the_datasets_own_transform_equal_the_host_loader():
    """A float store, the dataset's transform (an unpadded smaller crop) before the loader's
    (flip, then normalise): DataLoader's order of transforms and of draws."""
    dataset = make_dataset(dtype=np.float64, transform=RandomCrop((5, 6)))
    transform = Compose([RandomHorizontalFlip(0.3), Normalize(MEAN, STD)])
    arguments = {"batch_size": 6, "shuffle": True, "seed": 5, "transform": transform}
    ours = DeviceDataLoader(dataset, device="cpu", **arguments)
    batches = host_batches(ours)
    assert batches[0][0].shape == (6, 3, 5, 6)
    assert_same_batches(batches, host_batches(DataLoader(dataset, **arguments)))


def test_the_evaluation_path_equals_the_host_loader():
    dataset = make_dataset(count=9)
    arguments = {"batch_size": 4, "transform": Normalize(MEAN, STD)}
    ours = DeviceDataLoader(dataset, device="cuda", **arguments)
    assert_same_batches(host_batches(ours), host_batches(DataLoader(dataset, **arguments)))


def test_batches_follow_the_epochs_draws():
    """Each batch is the float64 reference applied to the loader's own draws for that epoch."""
    dataset = make_dataset(count=11)
    loader = DeviceDataLoader(
        dataset, batch_size=6, shuffle=True, seed=1, transform=cifar_like(), device="cuda"
    )
    draws, again = loader.draws(), loader.draws(0)  # a function of (seed, epoch) alone
    for field in ("order", "top", "left", "flip"):
        np.testing.assert_array_equal(getattr(again, field), getattr(draws, field))
    for start, (images, labels) in zip(range(0, 11, 6), loader, strict=True):
        batch = slice(start, start + 6)
        expected = reference_augment_batch(
            dataset.images,
            draws.order[batch],
            draws.top[batch],
            draws.left[batch],
            draws.flip[batch],
            np.float32(MEAN),
            np.float32(STD),
            SHAPE[1:],
            2,
        )
        assert_close(images.numpy(), expected, np.float32)
        np.testing.assert_array_equal(labels.numpy(), dataset.labels[draws.order[batch]])
    assert draws.flip.any() and not draws.flip.all()
    assert draws.top.min() >= 0 and draws.top.max() <= 4 and draws.left.max() <= 4


# ------------------------------------------------------------------ order, epochs, seeds


@pytest.mark.parametrize(("count", "batch_size"), [(23, 5), (20, 5), (3, 8)])
def test_every_item_once_per_epoch(count, batch_size):
    loader = DeviceDataLoader(
        make_dataset(count), batch_size=batch_size, shuffle=True, seed=2, device="cpu"
    )
    orders = [loader.draws(epoch).order for epoch in range(2)]
    for order in orders:
        np.testing.assert_array_equal(np.sort(order), np.arange(count))
    assert count < 4 or not np.array_equal(*orders)
    sizes = [len(labels) for _, labels in loader]
    assert sizes == [min(batch_size, count - s) for s in range(0, count, batch_size)]
    assert len(loader) == len(sizes)


def test_drop_last_keeps_full_batches_only():
    dataset = make_dataset(23)
    loader = DeviceDataLoader(
        dataset, batch_size=5, shuffle=True, drop_last=True, seed=4, device="cpu"
    )
    order = loader.draws().order
    assert len(order) == 20 and len(set(order.tolist())) == 20
    batches = host_batches(loader)
    assert len(loader) == len(batches) == 4 and all(len(labels) == 5 for _, labels in batches)
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), dataset.labels[order])


def test_without_shuffle_the_order_is_the_datasets():
    loader = DeviceDataLoader(make_dataset(7), batch_size=3, device="cpu")
    np.testing.assert_array_equal(loader.draws().order, np.arange(7))


def test_same_seed_same_batches_new_ones_each_epoch():
    dataset = make_dataset()

    def loader(seed):
        return DeviceDataLoader(
            dataset, batch_size=8, shuffle=True, seed=seed, transform=cifar_like(), device="cpu"
        )

    first, second = loader(7), loader(7)
    epoch0 = host_batches(first)
    assert_same_batches(host_batches(second), epoch0)
    epoch1 = host_batches(first)
    assert not np.array_equal(epoch0[0][0], epoch1[0][0])
    assert not np.array_equal(loader(8).draws().order, first.draws(0).order)


def test_resume_by_setting_the_epoch():
    dataset = make_dataset()
    arguments = {"batch_size": 8, "shuffle": True, "seed": 9, "transform": cifar_like()}
    uninterrupted = DeviceDataLoader(dataset, device="cpu", **arguments)
    host_batches(uninterrupted)
    iterator = iter(uninterrupted)  # the epoch advances when iteration starts, not before
    assert uninterrupted.epoch == 1
    expected = host_batches(iterator)
    assert uninterrupted.epoch == 2
    resumed = DeviceDataLoader(dataset, device="cpu", **arguments)
    resumed.epoch = 1
    assert_same_batches(host_batches(resumed), expected)


def test_unseeded_loader_follows_the_framework_seed():
    dataset = make_dataset()
    orders = []
    for _ in range(2):
        fastnet.manual_seed(123)
        orders.append(DeviceDataLoader(dataset, shuffle=True, device="cpu").draws().order)
    np.testing.assert_array_equal(*orders)


# ------------------------------------------------------------------ transfers and launches


def test_one_upload_an_epoch_and_one_launch_a_batch(monkeypatch):
    """The images are uploaded as stored (uint8), with the labels and the normalisation, once;
    then an epoch uploads its draws once and each batch is one kernel launch, nothing else."""
    device = get_device("cuda")
    uploads = []
    upload = device.upload

    def counted(data, dtype=None):
        uploads.append((np.asarray(data).dtype, np.shape(data)))
        return upload(data, dtype)

    monkeypatch.setattr(device, "upload", counted)
    monkeypatch.setattr(device, "asarray", lambda *args: pytest.fail("host data not uploaded"))
    dataset = make_dataset(count=10)
    loader = DeviceDataLoader(
        dataset, batch_size=4, shuffle=True, seed=0, transform=cifar_like(), device="cuda"
    )
    assert uploads == [
        (np.dtype(np.uint8), (10, *SHAPE)),
        (np.dtype(np.int64), (10,)),
        (np.dtype(np.float32), (2, 3)),
    ]
    uploads.clear()
    launches_before = _cuda.launches.count
    batches = 0
    for images, labels in loader:
        batches += 1
        assert images.shape == (len(labels), *SHAPE)
        assert _cuda.launches.count - launches_before == batches
        assert len(uploads) == 1  # the epoch's draws, before the first batch
    assert batches == len(loader) == 3
    assert uploads == [(np.dtype(np.int64), (4, 10))]


# ------------------------------------------------------------------ labels


def test_labels_carry_their_host_checked_range():
    dataset = make_dataset()
    loader = DeviceDataLoader(dataset, batch_size=8, device="cuda")
    expected = (int(dataset.labels.min()), int(dataset.labels.max()))
    assert loader.label_range == expected
    _, labels = next(iter(loader))
    assert labels._value_range == expected


@pytest.mark.parametrize(
    ("label", "message"), [(CLASSES, r"\[0, 3\] class indices"), (-1, "got labels in \\[-1")]
)
def test_labels_out_of_range_raise_at_construction(label, message):
    dataset = make_dataset()
    dataset.labels[5] = label
    with pytest.raises(ValueError, match=message):
        DeviceDataLoader(dataset, device="cpu")


# ------------------------------------------------------------------ what it cannot run


def flip_then_crop():
    return Compose([RandomHorizontalFlip(), RandomCrop(SHAPE[1:], padding=1)])


@pytest.mark.parametrize(
    ("transform", "error", "message"),
    [
        (lambda batch, rng: batch, TypeError, "cannot run <function"),
        (Compose([Normalize(MEAN, STD), Normalize(MEAN, STD)]), ValueError, "Normalize twice"),
        (flip_then_crop(), ValueError, "RandomHorizontalFlip after RandomCrop only"),
        (Compose([Normalize(MEAN, STD), RandomCrop(SHAPE[1:], 2)]), ValueError, "pads before"),
        (Normalize((0.5,), (0.2,)), ValueError, "Normalize has 1 channels, the images 3"),
        (RandomCrop((12, 9), padding=2), ValueError, r"crop does not fit 7x9 images padded by 2"),
    ],
)
def test_transforms_it_cannot_run_raise_at_construction(transform, error, message):
    with pytest.raises(error, match=message):
        DeviceDataLoader(make_dataset(), transform=transform, device="cpu")


def test_a_map_style_dataset_is_refused():
    items = [(np.zeros(SHAPE, np.float32), 0)] * 3
    with pytest.raises(TypeError, match="needs a whole-array dataset"):
        DeviceDataLoader(items, device="cpu")


@pytest.mark.parametrize(
    ("arguments", "message"), [({"batch_size": 0}, "batch_size"), ({"seed": -1}, "seed")]
)
def test_argument_errors(arguments, message):
    with pytest.raises(ValueError, match=message):
        DeviceDataLoader(make_dataset(), device="cpu", **arguments)
