"""The MPI communicator: host (NumPy) arrays reduced by the MPI library through ``mpi4py``.

MPI is also the launcher (``mpiexec -n N``) and the control channel of every backend: the NCCL
communicator is set up over it. Reductions are in place (``MPI.IN_PLACE``); ``iallreduce`` is
``MPI_Iallreduce``, whose request is driven by ``Work.test`` (an MPI library without a progress
thread advances a non-blocking collective only inside MPI calls) and finished by ``Work.wait``.
``mean`` is a sum divided by ``size`` when the request completes.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, NoReturn

import numpy as np

from ..extras import install_hint
from .communicator import Communicator, Work, check_array, check_reduction

ABORT_GRACE_SECONDS = 0.2  # see MPICommunicator.abort


def import_mpi() -> Any:
    """``mpi4py.MPI``, or ImportError naming the extra that installs it."""
    try:
        from mpi4py import MPI
    except ImportError as error:
        raise ImportError(
            f"MPI needs mpi4py and an MPI library: {install_hint('mpi')} ({error})"
        ) from error
    return MPI


class MPIWork(Work):
    def __init__(self, array: Any, request: Any, divisor: int) -> None:
        super().__init__(array)
        self.request, self.divisor = request, divisor

    def test(self) -> bool:
        return self.request is None or bool(self.request.Test())

    def wait(self) -> Any:
        if self.request is not None:
            self.request.Wait()
            self.request = None
            if self.divisor != 1:
                self.array /= self.divisor
                self.divisor = 1
        return self.array


class MPICommunicator(Communicator):
    """The ranks of an MPI communicator (``MPI.COMM_WORLD`` unless given)."""

    backend = "mpi"

    def __init__(self, comm: Any = None) -> None:
        self.MPI = import_mpi()
        self.comm = comm if comm is not None else self.MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        # the processes that share this machine's memory: the local rank picks a GPU
        local = self.comm.Split_type(self.MPI.COMM_TYPE_SHARED)
        self.local_rank, self.local_size = local.Get_rank(), local.Get_size()
        local.Free()
        self._ops = {"sum": self.MPI.SUM, "mean": self.MPI.SUM, "max": self.MPI.MAX}
        self._ops["min"] = self.MPI.MIN

    def _host(self, array: Any, what: str) -> np.ndarray:
        if not isinstance(array, np.ndarray):
            raise TypeError(
                f"the MPI communicator's {what} takes host (NumPy) arrays, got "
                f"{type(array).__module__}.{type(array).__name__}: GPU arrays go through NCCL"
            )
        return check_array(array, what)

    def iallreduce(self, array: Any, op: str = "sum") -> MPIWork:
        array = check_reduction(self._host(array, "allreduce"), op)
        if self.size == 1:
            return MPIWork(array, None, 1)
        request = self.comm.Iallreduce(self.MPI.IN_PLACE, array, op=self._ops[op])
        return MPIWork(array, request, self.size if op == "mean" else 1)

    def broadcast(self, array: Any, root: int = 0) -> Any:
        root = self.check_root(root)
        array = self._host(array, "broadcast")
        if self.size > 1:
            self.comm.Bcast(array, root=root)
        return array

    def allgather(self, array: Any) -> np.ndarray:
        array = self._host(array, "allgather")
        rows = np.empty((self.size, *array.shape), array.dtype)
        self.comm.Allgather(array, rows)
        return rows

    def broadcast_object(self, value: Any, root: int = 0) -> Any:
        """A picklable host value (a NCCL id, a seed) from rank ``root`` to every rank."""
        return self.comm.bcast(value, root=self.check_root(root))

    def barrier(self) -> None:
        self.comm.Barrier()

    def abort(self, code: int = 1) -> NoReturn:
        sys.stdout.flush()
        sys.stderr.flush()
        # mpiexec forwards a rank's output through a pipe: Abort tears the job down at once and
        # the last lines (the traceback that says why) were sometimes lost in CI. A moment lets
        # the forwarder read them; the failure path only.
        time.sleep(ABORT_GRACE_SECONDS)
        self.comm.Abort(code)
        os._exit(code)  # not reached: Abort ends the process

    def describe(self) -> str:
        library = self.MPI.Get_library_version().splitlines()[0].strip()
        library = " ".join(library.split())
        ranks = f"{self.size} rank{'s' if self.size != 1 else ''}"
        return (
            f"mpi ({library}), {ranks}, {self.local_size} on this machine "
            f"(this process is rank {self.rank}, local rank {self.local_rank})"
        )
