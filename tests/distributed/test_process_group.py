"""The process group in one process: what a run without mpiexec gets, and the contract's checks."""

from __future__ import annotations

import numpy as np
import pytest

import fastnet as fn
from fastnet import distributed
from fastnet.distributed import SingleProcess


@pytest.fixture
def no_group(monkeypatch):
    for name in ("PMI_SIZE", "PMI_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK"):
        monkeypatch.delenv(name, raising=False)
    distributed.destroy_process_group()
    yield
    distributed.destroy_process_group()


def test_without_a_launcher_the_group_is_one_process(no_group) -> None:
    group = distributed.init_process_group(device="cpu")
    assert isinstance(group, SingleProcess) and distributed.is_initialized()
    assert (distributed.get_rank(), distributed.get_world_size()) == (0, 1)
    assert distributed.is_main_process() and distributed.launched_ranks() is None
    assert distributed.init_process_group() is group  # a second call returns the first
    with pytest.raises(RuntimeError, match="already initialised with backend 'single'"):
        distributed.init_process_group("mpi")
    with pytest.raises(ValueError, match="unknown backend 'gloo'"):
        distributed.init_process_group("gloo")


def test_the_launcher_picks_the_backend(monkeypatch, no_group) -> None:
    monkeypatch.setenv("PMI_SIZE", "4")
    monkeypatch.setenv("PMI_RANK", "3")
    assert (distributed.launched_ranks(), distributed.launched_rank()) == (4, 3)
    assert distributed._choose_backend("cpu") == "mpi"
    # this process simulates CUDA (tests/conftest.py): simulated arrays are host arrays, for MPI
    assert distributed._choose_backend("cuda") == "mpi"
    monkeypatch.delenv("PMI_SIZE")
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")
    assert distributed.launched_ranks() == 2


def test_one_process_collectives_leave_values_and_check_arguments(no_group) -> None:
    rng = np.random.default_rng(5)
    values = rng.standard_normal(7).astype(np.float32)
    tensor = fn.tensor(values.copy())
    version = tensor._version
    distributed.all_reduce(tensor, "mean")
    distributed.broadcast(tensor, 0)
    assert np.array_equal(tensor.numpy(), values) and tensor._version == version + 2
    array = values.copy()
    work = distributed.all_reduce(array, "max", async_op=True)
    assert work.test() and work.wait() is array
    group = distributed.get_communicator()
    assert np.array_equal(group.allgather(array), array[None])
    with pytest.raises(ValueError, match="unknown reduction 'avg'"):
        group.allreduce(array, "avg")
    with pytest.raises(TypeError, match="floating-point"):
        group.allreduce(np.arange(3), "mean")
    with pytest.raises(ValueError, match="C-contiguous"):
        group.allreduce(rng.standard_normal((4, 4))[:, ::2])
    with pytest.raises(ValueError, match="root 1 is not a rank"):
        group.broadcast(array, 1)
    with pytest.raises(TypeError, match="needs an array"):
        group.allreduce([1.0, 2.0])
