"""The DataLoader with any map-style dataset (PyTorch's protocol), its argument checks, and the
background thread that prepares the next batch (issue 15)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import fastnet as fn
from fastnet.data import ArrayDataset, DataLoader, Normalize, collate_items


class Squares:
    """A map-style dataset that is not an ArrayDataset: item i is (image, label) with the image
    a (1, 2, 3) float32 array filled with i and the label i % 4, in one of several types."""

    def __init__(self, count: int, kind: str = "numpy", fail_at: int | None = None) -> None:
        self.count, self.kind, self.fail_at = count, kind, fail_at

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int):
        if index == self.fail_at:
            raise RuntimeError(f"cannot read item {index}")
        image = np.full((1, 2, 3), index, dtype=np.float32)
        label = index % 4
        if self.kind == "tensor":
            return fn.tensor(image), fn.tensor(label)
        if self.kind == "list":
            return [image.tolist(), np.int64(label)]
        return image, label


def _items_seen(batches) -> np.ndarray:
    seen = []
    for images, labels in batches:
        items = images[:, 0, 0, 0].astype(np.int64)
        np.testing.assert_array_equal(labels, items % 4)
        seen.append(items)
    return np.concatenate(seen)


@pytest.mark.parametrize("kind", ["numpy", "tensor", "list"])
def test_any_map_style_dataset_is_batched(kind):
    loader = DataLoader(Squares(23, kind), batch_size=5, shuffle=True, seed=2)
    batches = list(loader)
    assert len(batches) == len(loader) == 5
    images, labels = batches[0]
    assert isinstance(images, fn.Tensor) and images.shape == (5, 1, 2, 3)
    assert images.dtype == np.float32 and labels.dtype == np.int64
    seen = _items_seen((x.numpy(), y.numpy()) for x, y in batches)
    np.testing.assert_array_equal(np.sort(seen), np.arange(23))
    assert not np.array_equal(seen, np.arange(23))


def test_a_generic_dataset_follows_the_same_seeded_order_as_an_array_dataset():
    generic = Squares(30)
    arrays = ArrayDataset(
        np.stack([generic[i][0] for i in range(30)]), np.array([generic[i][1] for i in range(30)])
    )
    for shuffle in (False, True):
        a = DataLoader(generic, batch_size=7, shuffle=shuffle, seed=9)
        b = DataLoader(arrays, batch_size=7, shuffle=shuffle, seed=9)
        for _ in range(2):
            for (xa, ya), (xb, yb) in zip(a.numpy_batches(), b.numpy_batches(), strict=True):
                np.testing.assert_array_equal(xa, xb)
                np.testing.assert_array_equal(ya, yb)


def test_the_loader_transform_applies_to_the_images_of_a_generic_dataset():
    loader = DataLoader(Squares(6), batch_size=6, transform=Normalize((1.0,), (2.0,)))
    images, labels = next(loader.numpy_batches())
    np.testing.assert_array_equal(images[:, 0, 0, 0], (np.arange(6) - 1) / 2)
    np.testing.assert_array_equal(labels, np.arange(6) % 4)


def test_collate_names_items_that_do_not_fit():
    image = np.zeros((1, 2, 2), np.float32)
    with pytest.raises(ValueError, match=r"field 0.*\(1, 2, 2\), \(3, 2, 2\)"):
        collate_items([(image, 0), (np.zeros((3, 2, 2), np.float32), 1)])
    with pytest.raises(TypeError, match="item 1 of the batch is int"):
        collate_items([(image, 0), 5])
    (stacked,) = collate_items([image, image + 1])
    assert stacked.shape == (2, 1, 2, 2)


@pytest.mark.parametrize(
    "batch_size, error",
    [(True, TypeError), (False, TypeError), (0, ValueError), (-3, ValueError), (2.0, TypeError)],
)
def test_batch_size_must_be_a_positive_int(batch_size, error):
    with pytest.raises(error, match=f"batch_size must be a positive int, got {batch_size!r}"):
        DataLoader(Squares(4), batch_size=batch_size)


def test_an_object_that_is_not_a_dataset_is_refused():
    with pytest.raises(TypeError, match="map-style dataset.*got int"):
        DataLoader(12)


def _prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "fastnet-prefetch"]


@pytest.mark.parametrize("dataset", [Squares(41), "array"])
def test_prefetching_gives_the_same_batches(dataset, rng):
    if dataset == "array":
        dataset = ArrayDataset(rng.random((41, 1, 2, 3), dtype=np.float32), np.arange(41) % 4)
    plain = DataLoader(dataset, batch_size=4, shuffle=True, seed=3)
    ahead = DataLoader(dataset, batch_size=4, shuffle=True, seed=3, prefetch=2)
    for _ in range(2):
        for (xa, ya), (xb, yb) in zip(plain, ahead, strict=True):
            np.testing.assert_array_equal(xa.numpy(), xb.numpy())
            np.testing.assert_array_equal(ya.numpy(), yb.numpy())
    assert ahead.epoch == 2 and not _prefetch_threads()


def test_the_batches_are_made_in_the_background_thread():
    makers = set()

    class Recording(Squares):
        def __getitem__(self, index):
            makers.add(threading.current_thread().name)
            return super().__getitem__(index)

    list(DataLoader(Recording(10), batch_size=3, prefetch=True))
    assert makers == {"fastnet-prefetch"}


def test_an_error_in_the_worker_is_raised_in_the_loop():
    loader = DataLoader(Squares(20, fail_at=13), batch_size=4, prefetch=2)
    seen = []
    with pytest.raises(RuntimeError, match="cannot read item 13"):
        for images, _ in loader:
            seen.extend(images.numpy()[:, 0, 0, 0])
    assert seen == list(range(12))
    assert not _prefetch_threads()


def test_no_thread_is_left_running_after_the_loop_breaks():
    loader = DataLoader(Squares(200), batch_size=2, prefetch=3)
    for step, _ in enumerate(loader):
        assert len(_prefetch_threads()) == 1
        if step == 2:
            break
    assert not _prefetch_threads()


@pytest.mark.parametrize("prefetch, error", [(-1, ValueError), (1.5, TypeError), ("2", TypeError)])
def test_prefetch_must_be_a_non_negative_int(prefetch, error):
    with pytest.raises(error, match="prefetch must be"):
        DataLoader(Squares(4), prefetch=prefetch)
