"""The NCCL communicator: device (CuPy) arrays reduced by NCCL on CuPy's current stream.

One process per GPU: a rank uses GPU ``local_rank % device count`` (its rank among the processes
of its machine; where a launcher shows each rank only its own GPU through
``CUDA_VISIBLE_DEVICES``, the count is 1 and every rank uses its device 0), made current before
anything else here touches the GPU, because NCCL binds a communicator to the device that is
current when it is created. Rank 0 makes NCCL's unique id (``ncclGetUniqueId``: 128 bytes naming
rank 0's bootstrap socket), MPI carries it to every rank (``control.broadcast_object``), and every
rank then joins with ``ncclCommInitRank(size, id, rank)``.

Collectives work in place (``sendbuff == recvbuff``, which NCCL allows) on C-contiguous arrays of
this rank's GPU. They are *stream-ordered*: ``allreduce`` and ``broadcast`` enqueue the NCCL
kernel on CuPy's current stream and return at once, and kernels enqueued later on that stream
see the result, as they would a CuPy kernel's. So a :class:`NCCLWork`'s ``wait()`` needs no host
synchronisation; only reading the values on the host (a copy to the host) waits for the GPU.
``mean`` is ``ncclAvg`` (NCCL 2.10 and later), else a sum divided by ``size`` on the same stream.

MPI stays the control channel (``control``): host values, ``barrier``, ``abort``. Host (NumPy)
arrays are refused here rather than copied, since a silent upload and download per call would
cost more than the collective; they go through ``control``.

The binding is CuPy's (``cupy.cuda.nccl``, NCCL itself from the ``nvidia-nccl-cu13`` wheel).
``nccl`` and ``cupy`` can be given in their place: the tests run this code with stand-ins that
perform the collectives over MPI, on machines without a GPU.
"""

from __future__ import annotations

from typing import Any, NoReturn

import numpy as np

from ..extras import install_hint
from .communicator import Communicator, Work, check_array, check_reduction
from .mpi import MPICommunicator

# NumPy dtype -> the binding's NCCL datatype constant (cupy_backends/cuda/libs/nccl.pxd). NCCL has
# no bool (a sum of bools is not a bool) and no complex type: those are refused.
DATATYPES = {
    "int8": "NCCL_INT8",
    "uint8": "NCCL_UINT8",
    "int32": "NCCL_INT32",
    "uint32": "NCCL_UINT32",
    "int64": "NCCL_INT64",
    "uint64": "NCCL_UINT64",
    "float16": "NCCL_FLOAT16",
    "float32": "NCCL_FLOAT32",
    "float64": "NCCL_FLOAT64",
}
# ncclAvg appeared in NCCL 2.10.3; the binding defines the constant whatever library it loads.
# Version codes are X*10000 + Y*100 + Z from NCCL 2.9 on (X*1000 + Y*100 + Z before).
AVG_SINCE = 21003


def import_nccl() -> tuple[Any, Any]:
    """``(cupy, cupy.cuda.nccl)``, or ImportError naming what installs them."""
    try:
        import cupy
        from cupy.cuda import nccl
    except ImportError as error:
        raise ImportError(
            f"the NCCL backend needs CuPy: {install_hint('cuda')} ({error})"
        ) from error
    # cupy.cuda.nccl imports without the library and says so in `available`
    if not getattr(nccl, "available", False):
        raise ImportError(
            "the NCCL backend needs the NCCL library, which CuPy did not find: "
            f"pip install nvidia-nccl-cu13, or {install_hint('cuda')}"
        )
    return cupy, nccl


def nccl_version_text(code: int) -> str:
    """NCCL's version code as text: 22703 -> "2.27.3"."""
    if code >= 20900:
        return f"{code // 10000}.{code % 10000 // 100}.{code % 100}"
    return f"{code // 1000}.{code % 1000 // 100}.{code % 100}"


class NCCLWork(Work):
    """A collective enqueued on a CUDA stream.

    ``wait()`` blocks nothing: the result is ready for everything enqueued later on the stream
    the collective went to. Where the caller's current stream is another one by then, ``wait()``
    makes that stream wait on the device for the collective's stream (an event recorded there
    now, so it covers the collective), again without stopping the host. ``test()`` is True
    for the same reason. To read the values on the host, copy them to the host: the copy waits.
    """

    def __init__(self, array: Any, stream: Any, cupy: Any) -> None:
        super().__init__(array)
        self.stream, self._cupy = stream, cupy

    def wait(self) -> Any:
        current = self._cupy.cuda.get_current_stream()
        if current.ptr != self.stream.ptr:
            current.wait_event(self.stream.record())
        return self.array


class NCCLCommunicator(Communicator):
    """This process's GPU joined to the other ranks' through NCCL, set up over MPI (``control``,
    ``MPICommunicator()`` unless given). ``nccl`` and ``cupy``: the binding and the array
    library, CuPy's unless given."""

    backend = "nccl"

    def __init__(
        self, control: MPICommunicator | None = None, nccl: Any = None, cupy: Any = None
    ) -> None:
        if cupy is None or nccl is None:
            found_cupy, found_nccl = import_nccl()
            cupy = found_cupy if cupy is None else cupy
            nccl = found_nccl if nccl is None else nccl
        self.cupy, self.nccl = cupy, nccl
        self._control = control if control is not None else MPICommunicator()
        self.rank, self.size = self._control.rank, self._control.size
        self.local_rank = self._control.local_rank
        self._datatypes = {np.dtype(name): getattr(nccl, code) for name, code in DATATYPES.items()}
        self.version = int(nccl.get_version())
        average = getattr(nccl, "NCCL_AVG", None) if self.version >= AVG_SINCE else None
        self._average = average is not None
        self._ops = {"sum": nccl.NCCL_SUM, "max": nccl.NCCL_MAX, "min": nccl.NCCL_MIN}
        self._ops["mean"] = average if average is not None else nccl.NCCL_SUM

        # A rank that cannot pick its GPU (or, rank 0, make the id) must not leave the others
        # waiting for the id forever: every rank learns whether all succeeded, and all raise.
        failure: Exception | None = None
        unique_id = None
        try:
            self.device_id, self.device_count = self._use_local_gpu()
            if self.rank == 0:
                unique_id = nccl.get_unique_id()
        except Exception as error:  # noqa: BLE001 - raised below, once every rank knows
            failure = error
        self._raise_if_any_rank_failed(failure)
        unique_id = self._control.broadcast_object(unique_id, root=0)
        # ncclCommInitRank: collective over the ranks, bound to the current (chosen) GPU
        self._comm: Any = nccl.NcclCommunicator(self.size, unique_id, self.rank)

    def _use_local_gpu(self) -> tuple[int, int]:
        count = int(self.cupy.cuda.runtime.getDeviceCount())
        if count < 1:
            raise RuntimeError("the NCCL backend needs a CUDA GPU, and this machine shows none")
        device_id = self.local_rank % count
        self.cupy.cuda.Device(device_id).use()
        return device_id, count

    def _raise_if_any_rank_failed(self, failure: Exception | None) -> None:
        failed = np.zeros(self.size, np.int32)
        failed[self.rank] = failure is not None
        self._control.allreduce(failed, "sum")
        if failure is not None:
            raise failure
        if failed.any():
            ranks = ", ".join(str(rank) for rank in np.flatnonzero(failed))
            raise RuntimeError(
                f"the NCCL backend could not be set up on rank(s) {ranks} (see their errors)"
            )

    @property
    def control(self) -> MPICommunicator:
        """The MPI communicator for host values (metrics, flags, objects)."""
        return self._control

    def _communicator(self) -> Any:
        if self._comm is None:
            raise RuntimeError("the NCCL communicator is closed")
        return self._comm

    def _device_array(self, array: Any, what: str) -> Any:
        """``array`` if it is a C-contiguous CuPy array on this rank's GPU."""
        if not isinstance(array, self.cupy.ndarray):
            if isinstance(array, np.ndarray):
                raise TypeError(
                    f"the NCCL communicator's {what} takes device (CuPy) arrays, got a NumPy "
                    "array: host values go through the communicator's .control (MPI)"
                )
            raise TypeError(
                f"the NCCL communicator's {what} takes device (CuPy) arrays, got "
                f"{type(array).__module__}.{type(array).__name__}"
            )
        check_array(array, what)
        if array.device.id != self.device_id:
            raise ValueError(
                f"{what}: the array is on GPU {array.device.id}, but this rank's NCCL "
                f"communicator is on GPU {self.device_id}"
            )
        return array

    def _datatype(self, array: Any, what: str) -> int:
        datatype = self._datatypes.get(array.dtype)
        if datatype is None:
            supported = ", ".join(str(dtype) for dtype in self._datatypes)
            raise TypeError(f"NCCL cannot {what} {array.dtype} arrays (it takes {supported})")
        return datatype

    def iallreduce(self, array: Any, op: str = "sum") -> NCCLWork:
        """``op`` over the ranks' ``array``, in place, enqueued on the current stream; the
        returned work's ``wait()`` needs no host synchronisation (see :class:`NCCLWork`)."""
        array = check_reduction(self._device_array(array, "allreduce"), op)
        datatype = self._datatype(array, "allreduce")
        communicator = self._communicator()
        stream = self.cupy.cuda.get_current_stream()
        if array.size:  # every rank has the same shape, so every rank skips an empty array
            pointer = array.data.ptr
            communicator.allReduce(
                pointer, pointer, array.size, datatype, self._ops[op], stream.ptr
            )
            if op == "mean" and not self._average and self.size > 1:
                array /= self.size  # a CuPy kernel on the same stream, so after the sum
        return NCCLWork(array, stream, self.cupy)

    def broadcast(self, array: Any, root: int = 0) -> Any:
        """Rank ``root``'s ``array`` on every rank, in place, enqueued on the current stream
        (stream-ordered as ``iallreduce``: later kernels on that stream see it)."""
        root = self.check_root(root)
        array = self._device_array(array, "broadcast")
        datatype = self._datatype(array, "broadcast")
        communicator = self._communicator()
        if array.size:
            pointer = array.data.ptr
            stream = self.cupy.cuda.get_current_stream().ptr
            communicator.broadcast(pointer, pointer, array.size, datatype, root, stream)
        return array

    def barrier(self) -> None:
        """Every rank's host has reached this call (an MPI barrier). It orders nothing on the
        GPU: collectives and kernels already enqueued may still be running; synchronise the
        stream first where the GPU's work must be finished too."""
        self._control.barrier()

    def abort(self, code: int = 1) -> NoReturn:
        """End every rank now: abort the NCCL communicator (so this rank's NCCL kernels stop
        waiting for peers that may be gone), then MPI's abort."""
        communicator, self._comm = self._comm, None
        if communicator is not None:
            try:
                communicator.abort()
            except Exception:  # noqa: BLE001 - NCCL before 2.4 cannot; MPI's abort ends it anyway
                pass
        self._control.abort(code)

    def close(self) -> None:
        """Destroy the NCCL communicator (``ncclCommDestroy`` waits for its operations still on
        the GPU); MPI is finalised when the process exits. Collectives raise afterwards."""
        if self._comm is not None:
            self._comm.destroy()
            self._comm = None

    def describe(self) -> str:
        ranks = f"{self.size} rank{'s' if self.size != 1 else ''}"
        return (
            f"nccl (NCCL {nccl_version_text(self.version)}), {ranks}, GPU {self.device_id} of "
            f"{self.device_count} on this machine (this process is rank {self.rank}, local rank "
            f"{self.local_rank})"
        )
