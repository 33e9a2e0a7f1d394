"""The NCCL communicator's contract, run on stand-ins for CuPy and its NCCL binding (nccl_ranks.py)
that perform the collectives over MPI on the memory the backend's pointers name: one rank in this
process, and two ranks under ``mpiexec``. scripts/gpu_check.sh runs the same code on real NCCL."""

from __future__ import annotations

import argparse
import json
import sys
import types
from typing import Any

import numpy as np
import pytest
from nccl_ranks import CASES, DATATYPE_CODES, inputs, standin_nccl, standins
from ranks import run_ranks

from fastnet.distributed import SingleProcess
from fastnet.distributed.nccl import NCCLCommunicator, nccl_version_text
from fastnet.extras import install_hint

pytest.importorskip("mpi4py", reason="needs the mpi extra (mpi4py and MPICH)")

FLOATS = (np.float32, np.float64)
TOLERANCE = {"float32": 1e-6, "float64": 1e-14}


class Control(SingleProcess):
    """A one-rank control channel that says which local rank it is and records what it did."""

    backend = "mpi"

    def __init__(self, local_rank: int = 0) -> None:
        self.local_rank = local_rank
        self.objects: list[Any] = []
        self.barriers = 0
        self.aborted: int | None = None

    def broadcast_object(self, value: Any, root: int = 0) -> Any:
        self.objects.append((value, root))
        return value

    def barrier(self) -> None:
        self.barriers += 1

    def abort(self, code: int = 1) -> Any:
        self.aborted = code
        raise SystemExit(code)


def make(local_rank: int = 0, device_count: int | None = 1, **options: Any) -> tuple:
    cupy, nccl = standins(device_count, **options)
    control = Control(local_rank)
    return NCCLCommunicator(control, nccl=nccl, cupy=cupy), cupy, nccl, control


def random(rng: np.random.Generator, shape: Any, dtype: Any) -> np.ndarray:
    """Fresh values, never zero, of either sign."""
    if np.issubdtype(dtype, np.integer):
        return rng.integers(1, 100, shape).astype(dtype)
    return (rng.uniform(0.5, 2.0, shape) * rng.choice([-1.0, 1.0], shape)).astype(dtype)


def collectives(cupy: Any) -> list[tuple]:
    return [entry for entry in cupy.log if entry[0] in ("allReduce", "broadcast")]


@pytest.mark.parametrize("local_rank, device_count, expected", [(0, 1, 0), (4, 3, 1), (2, 4, 2)])
def test_the_gpu_comes_from_the_local_rank_and_is_current_before_nccl_starts(
    local_rank, device_count, expected
):
    comm, cupy, _, control = make(local_rank, device_count)
    assert comm.device_id == expected and cupy.current_device == expected
    (use, made, joined) = cupy.log
    assert use == ("use", expected)  # the first thing done to any GPU
    assert made[0] == "get_unique_id" and len(made[1]) == 128
    # the id rank 0 made went through the control channel, from root 0, and NCCL joined with it
    assert control.objects == [(made[1], 0)]
    assert joined == ("NcclCommunicator", 1, 0, expected, made[1])
    assert comm.local_rank == local_rank and (comm.rank, comm.size) == (0, 1)


@pytest.mark.parametrize("device_count, message", [(None, "cudaErrorNoDevice"), (0, "none")])
def test_no_gpu_raises_before_nccl_starts(device_count, message):
    cupy, nccl = standins(device_count)
    with pytest.raises(RuntimeError, match=message):
        NCCLCommunicator(Control(), nccl=nccl, cupy=cupy)
    assert not [entry for entry in cupy.log if entry[0] == "NcclCommunicator"]


@pytest.mark.parametrize("op", ["sum", "mean", "max", "min"])
@pytest.mark.parametrize("dtype", FLOATS)
def test_one_rank_reduces_in_place_with_the_array_s_pointer_count_and_datatype(op, dtype):
    comm, cupy, nccl, _ = make()
    rng = np.random.default_rng()
    for size in (1, 7, 1001):
        host = random(rng, (size,), dtype)
        device = cupy.asarray(host)
        assert comm.allreduce(device, op) is device
        np.testing.assert_array_equal(device.get(), host)  # one rank: the values stay
        name = {"mean": "NCCL_AVG"}.get(op, f"NCCL_{op.upper()}")
        code = DATATYPE_CODES[f"NCCL_{np.dtype(dtype).name.upper()}"]
        assert collectives(cupy)[-1] == ("allReduce", name, code, size, 0, True)


@pytest.mark.parametrize(
    "dtype", [np.float16, np.int8, np.uint8, np.int32, np.uint32, np.int64, np.uint64]
)
def test_every_nccl_datatype_is_mapped(dtype):
    comm, cupy, _, _ = make()
    device = cupy.asarray(random(np.random.default_rng(), (3, 5), dtype))
    comm.allreduce(device, "max")
    comm.broadcast(device, 0)
    code = DATATYPE_CODES[f"NCCL_{np.dtype(dtype).name.upper()}"]
    assert [entry[2] for entry in collectives(cupy)] == [code, code]
    assert [entry[3] for entry in collectives(cupy)] == [15, 15]


@pytest.mark.parametrize("options", [{"average": False}, {"version": 21002}])
def test_mean_is_a_sum_where_nccl_has_no_average(options):
    comm, cupy, _, _ = make(**options)
    host = random(np.random.default_rng(), 9, np.float64)
    device = cupy.asarray(host)
    comm.allreduce(device, "mean")
    assert collectives(cupy)[-1][1] == "NCCL_SUM"
    np.testing.assert_array_equal(device.get(), host)  # divided by size 1: not at all


def test_collectives_go_to_the_current_stream_and_wait_orders_another_stream():
    comm, cupy, _, _ = make()
    first, second = cupy.cuda.Stream(), cupy.cuda.Stream()
    device = cupy.asarray(random(np.random.default_rng(), 11, np.float32))
    with first:
        work = comm.iallreduce(device, "sum")
        assert collectives(cupy)[-1][4] == first.ptr
        assert work.test()  # stream-ordered: nothing to wait for on the host
        start = len(cupy.log)
        assert work.wait() is device
        assert cupy.log[start:] == []  # the same stream: nothing to do at all
    with second:
        work.wait()  # another stream: it waits, on the device, for the collective's
        assert cupy.log[start:] == [("record", first.ptr), ("wait_event", second.ptr, first.ptr)]
        comm.broadcast(device, 0)
        assert collectives(cupy)[-1][:2] == ("broadcast", 0)
        assert collectives(cupy)[-1][4:] == (second.ptr, True)


def test_empty_arrays_call_nothing():
    comm, cupy, _, _ = make()
    device = cupy.asarray(np.empty((0, 3), np.float32))
    assert comm.allreduce(device, "mean") is device and comm.broadcast(device, 0) is device
    assert collectives(cupy) == []


def _bad_calls(cupy: Any) -> list:
    rng = np.random.default_rng()
    good = cupy.asarray(random(rng, (5, 6), np.float32))
    return [
        ("allreduce", (random(rng, 5, np.float32),), TypeError, r"NumPy array.*\.control"),
        ("broadcast", (random(rng, 5, np.float32),), TypeError, r"\.control"),
        ("allreduce", ([1.0, 2.0],), TypeError, "CuPy"),
        ("allreduce", (good[:, ::2],), ValueError, "C-contiguous"),
        ("broadcast", (good[:, ::2],), ValueError, "C-contiguous"),
        ("allreduce", (good, "prod"), ValueError, "unknown reduction 'prod'"),
        ("allreduce", (cupy.asarray(random(rng, 5, np.int32)), "mean"), TypeError, "floating"),
        ("allreduce", (cupy.asarray(np.ones(5, bool)),), TypeError, "bool"),
        ("broadcast", (cupy.asarray(random(rng, 5, np.complex64)),), TypeError, "complex64"),
        ("broadcast", (good, 1), ValueError, "root 1 is not a rank"),
        ("broadcast", (good, -1), ValueError, "root -1"),
        ("broadcast", (good, True), TypeError, "root must be a rank"),
        ("allreduce", (cupy.asarray(random(rng, 5, np.float32), 1),), ValueError, "on GPU 1"),
    ]


def test_bad_arguments_raise_clear_errors_and_reach_no_nccl_call():
    comm, cupy, _, _ = make(device_count=2)
    for method, arguments, error, message in _bad_calls(cupy):
        with pytest.raises(error, match=message):
            getattr(comm, method)(*arguments)
    assert collectives(cupy) == []


def test_barrier_is_the_control_s_and_abort_stops_nccl_then_the_ranks():
    comm, cupy, _, control = make()
    comm.barrier()
    assert control.barriers == 1 and comm.control is control
    with pytest.raises(SystemExit) as stopped:
        comm.abort(3)
    assert stopped.value.code == 3 and control.aborted == 3
    assert cupy.log[-1] == ("abort",)


def test_abort_reaches_mpi_even_when_nccl_cannot_abort():
    comm, _, _, control = make()

    def cannot() -> None:
        raise RuntimeError("ncclCommAbort is not available in this version")

    comm._comm.abort = cannot
    with pytest.raises(SystemExit):
        comm.abort(2)
    assert control.aborted == 2


def test_close_destroys_the_communicator_once_and_later_collectives_raise():
    comm, cupy, _, _ = make()
    comm.close()
    comm.close()
    assert [entry for entry in cupy.log if entry == ("destroy",)] == [("destroy",)]
    with pytest.raises(RuntimeError, match="closed"):
        comm.allreduce(cupy.asarray(np.ones(3, np.float32)))


def test_describe_names_backend_version_ranks_and_gpu():
    comm, _, _, _ = make(local_rank=5, device_count=4, version=22703)
    assert comm.describe() == (
        "nccl (NCCL 2.27.3), 1 rank, GPU 1 of 4 on this machine "
        "(this process is rank 0, local rank 5)"
    )
    assert nccl_version_text(21003) == "2.10.3" and nccl_version_text(2708) == "2.7.8"


def test_the_default_control_is_mpi_and_carries_host_values():
    cupy, nccl = standins()
    comm = NCCLCommunicator(nccl=nccl, cupy=cupy)
    assert comm.control.backend == "mpi" and comm.size == comm.control.size == 1
    host = random(np.random.default_rng(), 5, np.float64)
    np.testing.assert_array_equal(comm.control.allreduce(host.copy(), "sum"), host)


def test_without_cupy_the_error_names_the_cuda_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)
    with pytest.raises(ImportError, match="cuda") as raised:
        NCCLCommunicator(Control())
    assert install_hint("cuda") in str(raised.value)


def test_without_the_nccl_library_the_error_names_its_wheel(monkeypatch):
    cupy = types.ModuleType("cupy")
    cupy.cuda = types.ModuleType("cupy.cuda")
    cupy.cuda.nccl = types.SimpleNamespace(available=False)
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    monkeypatch.setitem(sys.modules, "cupy.cuda", cupy.cuda)
    monkeypatch.setitem(sys.modules, "cupy.cuda.nccl", cupy.cuda.nccl)
    with pytest.raises(ImportError, match="nvidia-nccl-cu13"):
        NCCLCommunicator(Control())


def test_two_ranks_reduce_and_broadcast_as_numpy(tmp_path):
    seed = int(np.random.default_rng().integers(2**31))
    run_ranks(2, "nccl_ranks.py", tmp_path, str(seed), timeout=60)
    records = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    results = [np.load(tmp_path / f"rank{r}.npz") for r in (0, 1)]
    # the ranks' inputs, regenerated from the seed: the test knows both
    given = [inputs(seed, r) for r in (0, 1)]
    # a rank that could not set up (rank 1: no GPU) made every rank raise, none hang
    assert "cudaErrorNoDevice" in records[1]["setup_error"]
    assert "rank(s) 1" in records[0]["setup_error"]
    for rank, (record, result) in enumerate(zip(records, results, strict=True)):
        assert (record["rank"], record["size"], record["device"]) == (rank, 2, rank)
        assert record["log"][0] == ["use", rank]
        for op, dtype, size in CASES:
            key = f"{op}-{dtype}-{size}"
            stacked = np.stack([given[r][key] for r in (0, 1)]).astype(np.float64)
            np.testing.assert_array_equal(result[f"in:{key}"], given[rank][key])
            expected = {"sum": np.sum, "mean": np.mean, "max": np.max, "min": np.min}[op](
                stacked, axis=0
            )
            got = result[f"out:{key}"]
            assert got.dtype == np.dtype(dtype) and got.shape == (size,)
            # relative to the sum of magnitudes, a sum's error bound (a sum may cancel to 0)
            error = np.max(np.abs(got - expected) / np.abs(stacked).sum(axis=0))
            assert error <= TOLERANCE.get(dtype, 0.0), (key, error)
        for root in (0, 1):
            np.testing.assert_array_equal(
                result[f"out:broadcast-{root}"], given[root][f"broadcast-{root}"]
            )
        streams = {entry[4] for entry in record["log"] if entry[0] in ("allReduce", "broadcast")}
        assert streams == {record["stream"]}
        # without NCCL_AVG: a sum, then a division by the size on the same stream
        stacked = np.stack([given[r]["mean-without-avg"] for r in (0, 1)])
        got = result["out:mean-without-avg"]
        error = np.abs(got - stacked.mean(axis=0)) / np.abs(stacked).sum(axis=0)
        assert np.max(error) <= 1e-15
        fallback = [entry for entry in record["log"] if entry[0] in ("allReduce", "divide")]
        assert fallback[-2][:2] == ["allReduce", "NCCL_SUM"]
        assert fallback[-1] == ["divide", 2, record["stream"]]
    # every rank joined each communicator with the id rank 0 made for it
    made = [entry[1] for entry in records[0]["log"] if entry[0] == "get_unique_id"]
    assert len(made) == 2 and made[0] != made[1]
    for record in records:
        joined = [entry[4] for entry in record["log"] if entry[0] == "NcclCommunicator"]
        assert joined == made


def test_the_gpu_check_stage_runs_on_the_stand_ins_when_simulated():
    from fastnet.bench.gpu_nccl import CASES as STAGE_CASES
    from fastnet.bench.gpu_nccl import nccl

    saved: dict = {}
    status = nccl(argparse.Namespace(simulate=True), saved.update)
    assert status == "ok", saved
    assert "stand-ins" in saved["bindings"] and saved["communicator"].startswith("nccl (NCCL")
    assert [(c["op"], c["dtype"], c["size"]) for c in saved["checks"]] == STAGE_CASES
    assert all(check["ok"] for check in saved["checks"])


def test_the_stand_in_refuses_memory_outside_a_device_array():
    # what protects these tests from a wrong count: the stand-in's pointer check itself
    cupy, nccl = standins()
    comm = NCCLCommunicator(Control(), nccl=nccl, cupy=cupy)
    device = cupy.asarray(np.ones(4, np.float32))
    with pytest.raises(RuntimeError, match="not inside one device array"):
        comm._comm.allReduce(device.data.ptr, device.data.ptr, 5, 7, 0, 0)
    assert standin_nccl(cupy, average=False).NCCL_SUM == 0
