"""DistributedSampler: disjoint equal shards that together are one process's epoch."""

from __future__ import annotations

import numpy as np
import pytest

from fastnet.data import ArrayDataset, DataLoader, DistributedSampler


def dataset(count: int) -> ArrayDataset:
    rng = np.random.default_rng(count)
    return ArrayDataset(rng.standard_normal((count, 1, 2, 2)).astype(np.float32), np.arange(count))


@pytest.mark.parametrize("count, ranks", [(10, 2), (11, 2), (13, 4), (3, 5)])
@pytest.mark.parametrize("drop_last", [False, True])
def test_shards_are_equal_and_cover_the_permutation(count, ranks, drop_last) -> None:
    data = dataset(count)
    shards = [
        DistributedSampler(data, ranks, rank, seed=7, drop_last=drop_last).indices()
        for rank in range(ranks)
    ]
    length = count // ranks if drop_last else -(-count // ranks)
    assert {len(shard) for shard in shards} == {length}
    assert all(
        len(DistributedSampler(data, ranks, r, drop_last=drop_last)) == length for r in range(ranks)
    )
    order = np.random.default_rng([7, 0]).permutation(count)
    interleaved = np.stack(shards, axis=1).reshape(-1)  # positions r, r + R, ... back in order
    if drop_last:
        assert np.array_equal(interleaved, order[: length * ranks])
    else:
        assert np.array_equal(interleaved, np.resize(order, length * ranks))


def test_batch_b_of_the_ranks_is_batch_b_of_one_process_with_the_global_batch() -> None:
    data = dataset(203)
    single = [labels.numpy() for _, labels in DataLoader(data, 24, shuffle=True, seed=5)]
    ranks = [
        [
            labels.numpy()
            for _, labels in DataLoader(data, 8, sampler=DistributedSampler(data, 3, r, seed=5))
        ]
        for r in range(3)
    ]
    assert len({len(batches) for batches in ranks}) == 1
    for b, batch in enumerate(single[:-1]):  # the last global batch is padded on the ranks
        together = np.concatenate([batches[b] for batches in ranks])
        assert sorted(together) == sorted(batch)


def test_pad_false_counts_every_item_once() -> None:
    data = dataset(11)
    shards = [DistributedSampler(data, 4, r, shuffle=False, pad=False).indices() for r in range(4)]
    assert [len(s) for s in shards] == [3, 3, 3, 2]
    assert [len(DistributedSampler(data, 4, r, pad=False)) for r in range(4)] == [3, 3, 3, 2]
    assert sorted(np.concatenate(shards)) == list(range(11))


def test_each_epoch_has_its_own_order_and_the_loader_sets_it() -> None:
    data = dataset(40)
    sampler = DistributedSampler(data, 2, 1, seed=2)
    loader = DataLoader(data, 4, sampler=sampler)
    first = np.concatenate([y.numpy() for _, y in loader])
    second = np.concatenate([y.numpy() for _, y in loader])
    assert sampler.epoch == 1 and not np.array_equal(first, second)
    loader.epoch = 1  # a resumed run
    assert np.array_equal(np.concatenate([y.numpy() for _, y in loader]), second)


def test_bad_arguments_are_named() -> None:
    data = dataset(5)
    with pytest.raises(ValueError, match="rank 2 is not below num_replicas 2"):
        DistributedSampler(data, 2, 2)
    with pytest.raises(ValueError, match="num_replicas must be at least 1"):
        DistributedSampler(data, 0, 0)
    with pytest.raises(TypeError, match="rank must be an int"):
        DistributedSampler(data, 2, 0.5)
    with pytest.raises(ValueError, match="exclude each other"):
        DataLoader(data, 2, shuffle=True, sampler=DistributedSampler(data, 1, 0))
    with pytest.raises(TypeError, match="sampler must be iterable"):
        DataLoader(data, 2, sampler=3)


def test_without_a_process_group_it_is_one_rank_of_one() -> None:
    sampler = DistributedSampler(dataset(6), shuffle=False)
    assert (sampler.num_replicas, sampler.rank) == (1, 0)
    assert list(sampler) == list(range(6))


def test_the_device_loader_serves_the_same_shard_with_the_same_crops() -> None:
    from fastnet.data import DeviceDataLoader, RandomCrop

    rng = np.random.default_rng(9)
    data = ArrayDataset(rng.integers(0, 256, (37, 1, 6, 6), dtype=np.uint8), np.arange(37))
    crop = RandomCrop(6, padding=1)
    made = []
    for kind in (DataLoader, DeviceDataLoader):
        extra = {"device": "cpu"} if kind is DeviceDataLoader else {}
        sampler = DistributedSampler(data, 3, 2, seed=4)
        loader = kind(data, 5, sampler=sampler, seed=8, transform=crop, **extra)
        assert len(loader) == 3  # 13 items of 37 padded to 39, in batches of 5
        made.append([(x.numpy(), y.numpy()) for x, y in loader])
    for (x, y), (x_device, y_device) in zip(*made, strict=True):
        assert np.array_equal(y, y_device) and np.array_equal(x, x_device)
