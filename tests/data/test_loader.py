"""DataLoader, the index sampler, collate, and the dataset helpers subset / random_split."""

from __future__ import annotations

import numpy as np
import pytest

import fastnet.random
from fastnet.data import (
    MNIST,
    ArrayDataset,
    DataLoader,
    RandomCrop,
    batch_indices,
    collate,
    random_split,
    subset,
)


def _indexed_dataset(count: int, transform=None) -> ArrayDataset:
    """Float images whose every pixel holds the item's index, labels index % 10: a batch shows
    which items it holds."""
    images = np.broadcast_to(
        np.arange(count, dtype=np.float32)[:, None, None, None], (count, 1, 3, 2)
    ).copy()
    return ArrayDataset(images, np.arange(count) % 10, transform)


def _epoch_items(loader: DataLoader) -> list[np.ndarray]:
    batches = []
    for images, labels in loader.numpy_batches():
        assert images.dtype == np.float32 and labels.dtype == np.int64
        items = images[:, 0, 0, 0].astype(np.int64)
        np.testing.assert_array_equal(labels, items % 10)  # images and labels stay paired
        batches.append(items)
    return batches


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("count, batch_size", [(103, 10), (100, 10), (7, 64), (1, 1)])
def test_every_item_once_per_epoch(count, batch_size, shuffle):
    loader = DataLoader(_indexed_dataset(count), batch_size=batch_size, shuffle=shuffle, seed=3)
    for _ in range(2):
        batches = _epoch_items(loader)
        assert len(batches) == len(loader) == -(-count // batch_size)
        assert [len(b) for b in batches[:-1]] == [batch_size] * (len(batches) - 1)
        np.testing.assert_array_equal(np.sort(np.concatenate(batches)), np.arange(count))
        assert (
            not shuffle
            or count < 3
            or not np.array_equal(np.concatenate(batches), np.arange(count))
        )


@pytest.mark.parametrize("shuffle", [False, True])
def test_drop_last_keeps_full_batches_only(shuffle):
    loader = DataLoader(
        _indexed_dataset(103), batch_size=10, shuffle=shuffle, drop_last=True, seed=4
    )
    dropped = []
    for _ in range(3):
        batches = _epoch_items(loader)
        assert len(batches) == len(loader) == 10 and all(len(b) == 10 for b in batches)
        seen = np.concatenate(batches)
        assert len(np.unique(seen)) == 100
        dropped.append(tuple(np.setdiff1d(np.arange(103), seen)))
    assert (len(set(dropped)) > 1) == shuffle  # shuffled epochs drop different items
    assert len(DataLoader(_indexed_dataset(5), batch_size=10, drop_last=True)) == 0


def test_same_seed_same_order_new_order_each_epoch():
    first, second = (
        DataLoader(_indexed_dataset(50), batch_size=8, shuffle=True, seed=11) for _ in range(2)
    )
    epochs_a = [np.concatenate(_epoch_items(first)) for _ in range(3)]
    epochs_b = [np.concatenate(_epoch_items(second)) for _ in range(3)]
    for a, b in zip(epochs_a, epochs_b, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(epochs_a[0], epochs_a[1]) and not np.array_equal(
        epochs_a[1], epochs_a[2]
    )
    other_seed = DataLoader(_indexed_dataset(50), batch_size=8, shuffle=True, seed=12)
    assert not np.array_equal(np.concatenate(_epoch_items(other_seed)), epochs_a[0])
    resumed = DataLoader(_indexed_dataset(50), batch_size=8, shuffle=True, seed=11)
    resumed.epoch = 2
    np.testing.assert_array_equal(np.concatenate(_epoch_items(resumed)), epochs_a[2])


def test_unseeded_loader_follows_the_framework_seed():
    fastnet.random.manual_seed(5)
    first = DataLoader(_indexed_dataset(30), shuffle=True)
    fastnet.random.manual_seed(5)
    second = DataLoader(_indexed_dataset(30), shuffle=True)
    third = DataLoader(_indexed_dataset(30), shuffle=True)
    assert first.seed == second.seed != third.seed


def test_dataset_transform_runs_before_the_loader_transform():
    dataset = _indexed_dataset(20, transform=lambda batch, rng: batch * 2)
    loader = DataLoader(
        dataset, batch_size=6, shuffle=True, seed=1, transform=lambda batch, rng: batch + 1
    )
    seen = []
    for images, labels in loader.numpy_batches():
        items = (images[:, 0, 0, 0] - 1) / 2  # item i became 2i + 1; the other order gives 2i + 2
        np.testing.assert_array_equal(items, np.round(items))
        np.testing.assert_array_equal(labels, items.astype(np.int64) % 10)
        seen.append(items)
    np.testing.assert_array_equal(np.sort(np.concatenate(seen)), np.arange(20))


def test_epoch_generator_drives_order_and_random_transforms(rng):
    dataset = ArrayDataset(rng.random((20, 2, 6, 6), dtype=np.float32), np.arange(20) % 10)
    crop = RandomCrop(4, padding=1)
    loader = DataLoader(dataset, batch_size=6, shuffle=True, seed=1, transform=crop)
    next(loader.numpy_batches())  # epoch 0
    epoch_rng = np.random.default_rng([1, 1])
    expected = [
        collate(dataset, indices, crop, epoch_rng)
        for indices in batch_indices(20, 6, True, False, epoch_rng)
    ]
    got = list(loader.numpy_batches())
    assert len(got) == len(expected) == 4
    for (images, labels), (want_images, want_labels) in zip(got, expected, strict=True):
        np.testing.assert_array_equal(images, want_images)
        np.testing.assert_array_equal(labels, want_labels)


def test_random_augmentation_is_reproducible_per_seed(rng):
    images = rng.random((40, 3, 8, 8), dtype=np.float32)
    dataset = ArrayDataset(images, np.zeros(40, np.int64))
    runs = [
        [
            b
            for b, _ in DataLoader(
                dataset, 16, shuffle=True, seed=s, transform=RandomCrop(8, 2)
            ).numpy_batches()
        ]
        for s in (9, 9, 10)
    ]
    for a, b in zip(runs[0], runs[1], strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(runs[0][0], runs[2][0])


def test_uint8_images_are_scaled_once(rng):
    images = rng.integers(0, 256, size=(9, 2, 3, 3), dtype=np.uint8)
    dataset = ArrayDataset(images, np.arange(9))
    batch, labels = next(DataLoader(dataset, batch_size=4).numpy_batches())
    np.testing.assert_array_equal(batch, images[:4].astype(np.float32) / 255)
    np.testing.assert_array_equal(labels, np.arange(4))
    assert dataset.float_images() is dataset.float_images()


def test_iteration_yields_tensors(rng):
    from fastnet.tensor import Tensor

    dataset = ArrayDataset(rng.integers(0, 256, size=(10, 1, 4, 4), dtype=np.uint8), np.arange(10))
    batches = list(DataLoader(dataset, batch_size=4))
    assert len(batches) == 3
    images, labels = batches[-1]
    assert isinstance(images, Tensor) and isinstance(labels, Tensor)
    assert images.shape == (2, 1, 4, 4) and images.dtype == np.float32 and labels.dtype == np.int64
    np.testing.assert_array_equal(images.numpy(), dataset.float_images()[8:])
    np.testing.assert_array_equal(labels.numpy(), [8, 9])


@pytest.mark.parametrize(
    "bad, message", [({"batch_size": 0}, "batch_size"), ({"seed": -1}, "seed")]
)
def test_loader_argument_errors(bad, message):
    with pytest.raises(ValueError, match=message):
        DataLoader(_indexed_dataset(4), **bad)


def test_dataset_argument_errors():
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        ArrayDataset(np.zeros((3, 28, 28), np.uint8), np.zeros(3, np.int64))
    with pytest.raises(ValueError, match="3 images but 2 labels"):
        ArrayDataset(np.zeros((3, 1, 2, 2), np.uint8), np.zeros(2, np.int64))
    with pytest.raises(ValueError, match="labels must be integers"):
        ArrayDataset(np.zeros((3, 1, 2, 2), np.uint8), np.zeros(3, np.float32))


@pytest.fixture(scope="module")
def mnist_test(shared_data):
    return MNIST(root=shared_data, train=False)


def test_subset_draws_labels_per_class(mnist_test):
    few = subset(mnist_test, labels_per_class=100, seed=0)
    assert len(few) == 1000
    np.testing.assert_array_equal(np.bincount(few.labels), [100] * 10)
    again = subset(mnist_test, labels_per_class=100, seed=0)
    np.testing.assert_array_equal(few.images, again.images)
    other = subset(mnist_test, labels_per_class=100, seed=1)
    assert not np.array_equal(few.images, other.images)
    # every chosen item is a distinct item of the source with its own label
    flat = mnist_test.images.reshape(len(mnist_test), -1)
    keys = {row.tobytes(): label for row, label in zip(flat, mnist_test.labels, strict=True)}
    chosen = few.images.reshape(1000, -1)
    assert len({row.tobytes() for row in chosen}) == 1000
    assert all(keys[row.tobytes()] == label for row, label in zip(chosen, few.labels, strict=True))
    with pytest.raises(ValueError, match="class 5 has 892 items, fewer than labels_per_class=900"):
        subset(mnist_test, labels_per_class=900)


@pytest.mark.parametrize(
    "lengths, sizes", [((70, 33), (70, 33)), ((0.5, 0.3, 0.2), (52, 31, 20)), ((103,), (103,))]
)
def test_random_split_partitions(lengths, sizes):
    dataset = _indexed_dataset(103)
    parts = random_split(dataset, lengths, seed=2)
    assert tuple(len(p) for p in parts) == sizes
    items = np.concatenate([p.images[:, 0, 0, 0] for p in parts]).astype(np.int64)
    np.testing.assert_array_equal(np.sort(items), np.arange(103))
    again = random_split(dataset, lengths, seed=2)
    for a, b in zip(parts, again, strict=True):
        np.testing.assert_array_equal(a.labels, b.labels)
    if len(parts) > 1:
        assert not np.array_equal(parts[0].images, random_split(dataset, lengths, seed=3)[0].images)


@pytest.mark.parametrize("lengths", [(50, 50), (0.5, 0.6), (60, -1, 44)])
def test_random_split_rejects_bad_lengths(lengths):
    with pytest.raises(ValueError, match="lengths"):
        random_split(_indexed_dataset(103), lengths, seed=0)
