"""Stand-ins for CuPy and its NCCL binding, and the program test_nccl_backend.py runs as N ranks.

Where no GPU exists, :class:`fastnet.distributed.nccl.NCCLCommunicator` runs on these instead of
``cupy`` and ``cupy.cuda.nccl``: the same calls, with the binding's signatures and constants
(``cupy_backends/cuda/libs/nccl.pyx`` and ``.pxd``):

* a "device array" is a NumPy array behind CuPy's surface (``.data.ptr``, ``.device.id``,
  ``.flags``, ``.get()``; implicit conversion to NumPy refused, as CuPy refuses it);
* the stand-in ``NcclCommunicator`` performs each collective with MPI (``COMM_WORLD``) on the
  memory the backend's pointer and count name, after checking, as NCCL's pointer checks would,
  that they lie inside one live device array of the communicator's GPU (a wrong count would
  otherwise write past the array);
* everything the backend does to the GPU is logged in order (``StandInCuPy.log``): which device
  was made current, the unique id made and joined with, each collective and its stream.

Run as a program (``mpiexec -n N python nccl_ranks.py OUTDIR``), each rank reduces and
broadcasts random arrays and writes its inputs, outputs and log to ``OUTDIR/rank<r>.npz`` and
``.json`` for the test to check against NumPy.
"""

from __future__ import annotations

import ctypes
import itertools
import json
import sys
import traceback
import weakref
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

# The binding's constants (cupy_backends/cuda/libs/nccl.pxd)
REDUCTIONS = {"NCCL_SUM": 0, "NCCL_PROD": 1, "NCCL_MAX": 2, "NCCL_MIN": 3}
DATATYPES = {
    "NCCL_INT8": np.int8,
    "NCCL_UINT8": np.uint8,
    "NCCL_INT32": np.int32,
    "NCCL_UINT32": np.uint32,
    "NCCL_INT64": np.int64,
    "NCCL_UINT64": np.uint64,
    "NCCL_FLOAT16": np.float16,
    "NCCL_FLOAT32": np.float32,
    "NCCL_FLOAT64": np.float64,
}
DATATYPE_CODES = dict(zip(DATATYPES, range(len(DATATYPES)), strict=True))
NCCL_AVG = 4
UNIQUE_ID_BYTES = 128


# --------------------------------------------------------------------------- the CuPy stand-in
class StandInDevice:
    """``cupy.cuda.Device``: ``Device(i).use()`` makes GPU i current; ``Device()`` is it."""

    def __init__(self, cupy: StandInCuPy, device_id: int | None = None) -> None:
        self._cupy = cupy
        self.id = cupy.current_device if device_id is None else device_id

    def use(self) -> None:
        if not 0 <= self.id < self._cupy.device_count:
            raise RuntimeError(f"cudaErrorInvalidDevice: no GPU {self.id}")
        self._cupy.current_device = self.id
        self._cupy.log.append(("use", self.id))


class StandInStream:
    """``cupy.cuda.Stream``: ``.ptr``; ``with stream:`` makes it current; ``record()`` and
    ``wait_event()`` are logged."""

    def __init__(self, cupy: StandInCuPy, ptr: int) -> None:
        self._cupy, self.ptr, self._previous = cupy, ptr, []

    def __enter__(self) -> StandInStream:
        self._previous.append(self._cupy.current_stream)
        self._cupy.current_stream = self
        return self

    def __exit__(self, *exception: Any) -> None:
        self._cupy.current_stream = self._previous.pop()

    def record(self) -> tuple[str, int]:
        self._cupy.log.append(("record", self.ptr))
        return ("event", self.ptr)

    def wait_event(self, event: tuple[str, int]) -> None:
        self._cupy.log.append(("wait_event", self.ptr, event[1]))


class DeviceArray:
    """A "device" array: NumPy memory behind the part of CuPy's ndarray the backend uses. Only
    new arrays (not views) are allocations, whose bytes a collective may reach."""

    def __init__(
        self, cupy: StandInCuPy, memory: np.ndarray, device_id: int, allocation: bool = True
    ) -> None:
        self._cupy, self._memory = cupy, memory
        self.device = SimpleNamespace(id=device_id)
        self.data = SimpleNamespace(ptr=memory.ctypes.data)
        self.shape, self.dtype, self.size = memory.shape, memory.dtype, memory.size
        self.flags = memory.flags
        if allocation:
            cupy.allocations[self.data.ptr] = self

    def __array__(self, *arguments: Any, **keywords: Any) -> Any:
        raise TypeError("Implicit conversion to a NumPy array is not allowed (as in CuPy)")

    def __getitem__(self, index: Any) -> DeviceArray:
        return DeviceArray(self._cupy, self._memory[index], self.device.id, allocation=False)

    def __itruediv__(self, divisor: float) -> DeviceArray:
        self._cupy.log.append(("divide", divisor, self._cupy.current_stream.ptr))
        self._memory /= divisor
        return self

    def __imul__(self, factor: float) -> DeviceArray:
        self._memory *= factor
        return self

    def __mul__(self, factor: float) -> DeviceArray:
        return self._cupy.asarray(self._memory * factor, self.device.id)

    def get(self) -> np.ndarray:
        return self._memory.copy()


class StandInCuPy:
    """The part of ``cupy`` the backend and the gpu_check stage use, for ``device_count`` GPUs
    (``None``: ``getDeviceCount`` fails as CUDA does on a machine without a driver)."""

    def __init__(self, device_count: int | None = 1) -> None:
        self.device_count = device_count
        self.current_device = 0
        self.log: list[tuple] = []
        self.allocations: weakref.WeakValueDictionary[int, DeviceArray] = (
            weakref.WeakValueDictionary()
        )
        self.ndarray = DeviceArray
        self._pointers = itertools.count(0x7000)
        self.null_stream = StandInStream(self, 0)
        self.current_stream = self.null_stream
        self.cuda = SimpleNamespace(
            runtime=SimpleNamespace(getDeviceCount=self._device_count),
            Device=lambda device_id=None: StandInDevice(self, device_id),
            Stream=lambda non_blocking=False: StandInStream(self, next(self._pointers)),
            get_current_stream=lambda: self.current_stream,
        )

    def _device_count(self) -> int:
        if self.device_count is None:
            raise RuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected")
        return self.device_count

    def asarray(self, host: Any, device_id: int | None = None) -> DeviceArray:
        """A new device array holding a copy of ``host`` (on the current GPU unless named)."""
        device = self.current_device if device_id is None else device_id
        return DeviceArray(self, np.array(host, order="C"), device)


# --------------------------------------------------------------------------- the NCCL stand-in
def standin_nccl(cupy: StandInCuPy, version: int = 22703, average: bool = True) -> Any:
    """A stand-in ``cupy.cuda.nccl`` over MPI for the GPUs of ``cupy``. ``average``: whether the
    binding defines ``NCCL_AVG``; ``version``: what ``get_version()`` says."""
    from mpi4py import MPI

    world = MPI.COMM_WORLD
    reductions = {code: name for name, code in REDUCTIONS.items()}
    dtypes = {code: np.dtype(DATATYPES[name]) for name, code in DATATYPE_CODES.items()}
    if average:
        reductions[NCCL_AVG] = "NCCL_AVG"
    mpi_ops = {"NCCL_SUM": MPI.SUM, "NCCL_AVG": MPI.SUM, "NCCL_MAX": MPI.MAX}
    mpi_ops.update(NCCL_MIN=MPI.MIN, NCCL_PROD=MPI.PROD)

    def get_unique_id() -> tuple[int, ...]:
        # the real one: NCCL_UNIQUE_ID_BYTES signed chars
        unique = tuple(int(b) for b in np.random.default_rng().integers(-128, 128, 128))
        cupy.log.append(("get_unique_id", unique))
        return unique

    class NcclCommunicator:
        """``NcclCommunicator(ndev, commId, rank)``: ncclCommInitRank on the current GPU."""

        def __init__(self, ndev: int, comm_id: tuple[int, ...], rank: int) -> None:
            if (ndev, rank) != (world.Get_size(), world.Get_rank()):
                raise RuntimeError(f"NCCL ranks ({rank} of {ndev}) are not MPI's")
            if len(comm_id) != UNIQUE_ID_BYTES or set(world.allgather(comm_id)) != {comm_id}:
                raise RuntimeError("ncclCommInitRank: the ranks were given different ids")
            self.device = cupy.current_device
            self.aborted = self.destroyed = False
            cupy.log.append(("NcclCommunicator", ndev, rank, self.device, comm_id))

        def _buffer(self, pointer: int, count: int, datatype: int) -> np.ndarray:
            """The ``count`` elements at ``pointer``, inside one live array of this GPU."""
            dtype = dtypes[datatype]
            end = pointer + count * dtype.itemsize
            for start, array in list(cupy.allocations.items()):
                if start <= pointer and end <= start + array.dtype.itemsize * array.size:
                    if array.device.id != self.device:
                        raise RuntimeError("ncclInvalidArgument: memory of another GPU")
                    raw = (ctypes.c_byte * (end - pointer)).from_address(pointer)
                    return np.frombuffer(raw, dtype)
            raise RuntimeError(
                f"ncclInvalidArgument: {count} elements at {pointer:#x} are not "
                "inside one device array"
            )

        def _usable(self) -> None:
            if self.aborted or self.destroyed:
                raise RuntimeError("NCCL communicator used after abort or destroy")

        def allReduce(  # the binding's name
            self, sendbuf: int, recvbuf: int, count: int, datatype: int, op: int, stream: int
        ) -> None:
            self._usable()
            name = reductions[op]  # KeyError: an op this binding lacks
            receive = self._buffer(recvbuf, count, datatype)
            send = MPI.IN_PLACE if sendbuf == recvbuf else self._buffer(sendbuf, count, datatype)
            world.Allreduce(send, receive, op=mpi_ops[name])
            if name == "NCCL_AVG":
                receive /= world.Get_size()
            cupy.log.append(("allReduce", name, datatype, count, stream, sendbuf == recvbuf))

        def broadcast(
            self, sendbuff: int, recvbuff: int, count: int, datatype: int, root: int, stream: int
        ) -> None:
            self._usable()
            receive = self._buffer(recvbuff, count, datatype)
            if world.Get_rank() == root and sendbuff != recvbuff:
                receive[...] = self._buffer(sendbuff, count, datatype)
            world.Bcast(receive, root=root)
            cupy.log.append(("broadcast", root, datatype, count, stream, sendbuff == recvbuff))

        def abort(self) -> None:
            self.aborted = True
            cupy.log.append(("abort",))

        def destroy(self) -> None:
            self.destroyed = True
            cupy.log.append(("destroy",))

    constants = {**REDUCTIONS, **DATATYPE_CODES, **({"NCCL_AVG": NCCL_AVG} if average else {})}
    return SimpleNamespace(
        available=True,
        get_unique_id=get_unique_id,
        get_version=lambda: version,
        NcclCommunicator=NcclCommunicator,
        **constants,
    )


def standins(device_count: int | None = 1, **nccl_options: Any) -> tuple[StandInCuPy, Any]:
    """``(cupy, nccl)`` stand-ins for ``NCCLCommunicator(cupy=..., nccl=...)``."""
    cupy = StandInCuPy(device_count)
    return cupy, standin_nccl(cupy, **nccl_options)


# --------------------------------------------------------------------------- the rank program
SIZES = (1, 7, 1001, 4099)
CASES = [
    (op, dtype, size)
    for op in ("sum", "mean", "max", "min")
    for dtype in ("float32", "float64")
    for size in SIZES
] + [("sum", "int32", 1001), ("max", "int64", 7)]


def inputs(seed: int, rank: int) -> dict[str, np.ndarray]:
    """Rank ``rank``'s inputs: fresh random values (never zero) of odd sizes."""
    rng = np.random.default_rng([seed, rank])
    arrays = {}
    for op, dtype, size in CASES:
        if dtype.startswith("int"):
            values = rng.integers(1, 1000, size) * rng.choice([-1, 1], size)
        else:
            values = rng.uniform(0.5, 2.0, size) * rng.choice([-1.0, 1.0], size)
        arrays[f"{op}-{dtype}-{size}"] = values.astype(dtype)
    for root in (0, 1):
        arrays[f"broadcast-{root}"] = rng.uniform(0.5, 2.0, (3, 37)).astype(np.float32)
    arrays["mean-without-avg"] = rng.uniform(0.5, 2.0, 1001) * rng.choice([-1.0, 1.0], 1001)
    return arrays


def main(outdir: Path, seed: int) -> None:
    from mpi4py import MPI

    from fastnet.distributed.nccl import NCCLCommunicator

    world = MPI.COMM_WORLD
    rank = world.Get_rank()
    record: dict[str, Any] = {}
    # rank 1 sees no GPU: every rank must raise, none may wait for the id forever
    broken = standins(device_count=None if rank == 1 else 2)
    try:
        NCCLCommunicator(cupy=broken[0], nccl=broken[1])
    except RuntimeError as error:
        record["setup_error"] = str(error)

    cupy, nccl = standins(device_count=2)
    comm = NCCLCommunicator(cupy=cupy, nccl=nccl)
    record.update(rank=comm.rank, size=comm.size, device=comm.device_id, describe=comm.describe())
    arrays = inputs(seed, rank)
    outputs = {}
    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        works = []
        for op, dtype, size in CASES:
            key = f"{op}-{dtype}-{size}"
            works.append((key, comm.iallreduce(cupy.asarray(arrays[key]), op)))
        for key, work in works:
            outputs[key] = work.wait().get()
        for root in (0, 1):
            device = cupy.asarray(arrays[f"broadcast-{root}"])
            outputs[f"broadcast-{root}"] = comm.broadcast(device, root).get()
        # a binding without NCCL_AVG: a sum, then a division on the same stream
        without_avg = NCCLCommunicator(cupy=cupy, nccl=standin_nccl(cupy, average=False))
        device = cupy.asarray(arrays["mean-without-avg"])
        outputs["mean-without-avg"] = without_avg.allreduce(device, "mean").get()
        without_avg.close()
    record["stream"] = stream.ptr
    record["log"] = [list(entry) for entry in cupy.log]
    comm.barrier()
    comm.close()
    np.savez(
        outdir / f"rank{rank}.npz",
        **{f"in:{k}": v for k, v in arrays.items()},
        **{f"out:{k}": v for k, v in outputs.items()},
    )
    (outdir / f"rank{rank}.json").write_text(json.dumps(record))


if __name__ == "__main__":
    try:
        main(Path(sys.argv[1]), int(sys.argv[2]))
    except BaseException:  # noqa: BLE001 - every failure ends every rank, then the test says why
        # a rank that fails must not leave the others waiting in a collective until the timeout
        from mpi4py import MPI

        traceback.print_exc()
        sys.stderr.flush()
        MPI.COMM_WORLD.Abort(1)
