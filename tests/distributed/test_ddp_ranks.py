"""DistributedDataParallel under ``mpiexec -n 2`` against one process with the global batch.

2 ranks x 32 items must train what 1 process x 64 items trains (float32 rounding apart: the
ranks' gradient is a mean of two half-batch means); two 2-rank runs must agree to the bit; an
exception on one rank must end both promptly.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from ddp_ranks import SAMPLER_SEED, case, optimizer_for, train_steps
from ranks import run_ranks

import fastnet as fn
from fastnet.data import DataLoader
from fastnet.nn import DistributedDataParallel
from numerics import relative_error

# float32 training steps summed in another order: a few units in the last place, grown by 5 steps
STEP_TOLERANCE = 2e-6


def one_process(optimizer: str) -> dict[str, np.ndarray]:
    model, data = case(model_seed=0)
    loader = DataLoader(data, batch_size=64, shuffle=True, seed=SAMPLER_SEED)
    train_steps(model, loader, optimizer_for(optimizer, model.parameters()))
    return {name: param.numpy() for name, param in model.named_parameters()}


@pytest.fixture(scope="module")
def two_rank_steps(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    runs = []
    for attempt in range(2):
        out = tmp_path_factory.mktemp(f"steps{attempt}")
        run_ranks(2, "ddp_ranks.py", "steps", out)
        runs.append(out)
    return tuple(runs)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_two_ranks_train_what_one_process_trains_with_the_global_batch(
    two_rank_steps: tuple, optimizer: str
) -> None:
    expected = one_process(optimizer)
    start, _ = case(model_seed=0)
    for rank in (0, 1):
        got = np.load(two_rank_steps[0] / f"{optimizer}-rank{rank}.npz")
        assert sorted(got) == sorted(expected)
        for name, value in expected.items():
            assert relative_error(got[name], value) < STEP_TOLERANCE, (optimizer, rank, name)
    # the steps moved the weights far more than the tolerance (the comparison can fail)
    moved = [relative_error(p.numpy(), expected[n]) for n, p in start.named_parameters()]
    assert min(moved) > 100 * STEP_TOLERANCE


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_two_rank_runs_are_bit_identical_and_ranks_agree(
    two_rank_steps: tuple, optimizer: str
) -> None:
    first, second = (
        [np.load(run / f"{optimizer}-rank{rank}.npz") for rank in (0, 1)] for run in two_rank_steps
    )
    for name in first[0]:
        for files in (first, second):
            assert np.array_equal(files[0][name], files[1][name]), name  # the ranks agree
        assert np.array_equal(first[0][name], second[0][name]), name  # runs agree


def test_two_ranks_on_the_cuda_device_train_what_they_train_on_the_cpu(tmp_path) -> None:
    run_ranks(2, "ddp_ranks.py", "devices", tmp_path)  # Numba's simulator without a GPU
    files = {
        (device, rank): np.load(tmp_path / f"{device}-rank{rank}.npz")
        for device in ("cpu", "cuda")
        for rank in (0, 1)
    }
    for name in files["cpu", 0]:
        assert np.array_equal(files["cuda", 0][name], files["cuda", 1][name]), name
        assert relative_error(files["cuda", 0][name], files["cpu", 0][name]) < 1e-5, name


def test_no_sync_accumulates_locally_and_the_next_backward_averages(tmp_path) -> None:
    run_ranks(2, "ddp_ranks.py", "accumulate", tmp_path)
    model, data = case(model_seed=0)
    x, y = next(iter(DataLoader(data, batch_size=64, shuffle=True, seed=SAMPLER_SEED)))
    fn.functional.cross_entropy(model(x), y).backward()
    for rank in (0, 1):
        got = np.load(tmp_path / f"grads-rank{rank}.npz")
        for name, param in model.named_parameters():
            # two half-batch means summed on each rank, then averaged: twice the global mean
            assert relative_error(got[name], 2 * param.grad.numpy()) < 1e-5, (rank, name)


def test_an_exception_on_one_rank_ends_every_rank_promptly(tmp_path) -> None:
    start = time.perf_counter()
    done = run_ranks(2, "ddp_ranks.py", "fail", tmp_path, timeout=60, check=False)
    elapsed = time.perf_counter() - start
    assert done.returncode != 0
    assert "rank 1 fails on purpose in step 3" in done.stderr
    assert "[rank 1 of 2]" in done.stderr
    assert elapsed < 10, f"the ranks took {elapsed:.1f}s to end"


def test_rank_0s_buffers_reach_every_rank_and_batch_statistics_stay_each_ranks(tmp_path) -> None:
    run_ranks(2, "ddp_ranks.py", "buffers", tmp_path)
    ranks = [np.load(tmp_path / f"buffers-rank{rank}.npz") for rank in (0, 1)]
    names = [name for name in ranks[0] if name.startswith("start.")]
    assert len(names) == 3  # running mean and variance, batches tracked
    for name in names:
        assert np.array_equal(ranks[0][name], ranks[1][name]), name
    # each rank's batch moved its running mean its own way (different inputs)
    moved = "after.1.running_mean"
    assert not np.array_equal(ranks[0][moved], ranks[1][moved])
    assert not np.array_equal(ranks[0][moved], ranks[0]["start.1.running_mean"])


def test_ranks_that_built_different_models_are_told_so(tmp_path) -> None:
    done = run_ranks(2, "ddp_ranks.py", "mismatch", tmp_path, timeout=60, check=False)
    assert done.returncode != 0
    assert "the ranks built different models" in done.stderr
    assert "rank(s) [1]" in done.stderr


def test_one_process_wrapper_changes_nothing() -> None:
    model, data = case(model_seed=0)
    wrapped = DistributedDataParallel(model)
    x, y = next(iter(DataLoader(data, batch_size=64, shuffle=True, seed=SAMPLER_SEED)))
    fn.functional.cross_entropy(wrapped(x), y).backward()
    bare, _ = case(model_seed=0)
    fn.functional.cross_entropy(bare(x), y).backward()
    for (name, param), other in zip(model.named_parameters(), bare.parameters(), strict=True):
        assert np.array_equal(param.grad.numpy(), other.grad.numpy()), name
    assert list(wrapped.state_dict()) == [f"module.{name}" for name in model.state_dict()]
