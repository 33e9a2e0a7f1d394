"""Data-parallel training across processes: communicators, and the process group a run uses.

``mpiexec -n N fastnet train ...`` starts N copies of one program; each is a *rank*. They find
each other through MPI (``mpi4py``, the ``mpi`` extra), which also carries the host's small
messages; on GPUs the gradients go through NCCL (CuPy's binding), one GPU per rank. The contract
every backend implements is in :mod:`fastnet.distributed.communicator`.

The process group is this module's one communicator, made by :func:`init_process_group`:

* ``backend=None`` picks: ``single`` when no MPI launcher started this process (size 1, nothing
  imported), otherwise ``nccl`` for a run on the ``cuda`` device of a real GPU and ``mpi`` for
  the rest;
* with more than one rank, an exception that reaches the top of any rank's program prints that
  rank's traceback and aborts every rank (``MPI_Abort``), so that no rank waits forever in a
  collective for a rank that is gone.

``get_rank()``, ``get_world_size()``, ``is_main_process()``, ``barrier()``, ``all_reduce``
and ``broadcast`` (in place, on anything with a ``.data`` array, or on arrays) use it; before
:func:`init_process_group` they are those of a single process.
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import Any

from .communicator import REDUCE_OPS, Communicator, SingleProcess, Work

__all__ = [
    "BACKENDS",
    "REDUCE_OPS",
    "Communicator",
    "SingleProcess",
    "Work",
    "all_reduce",
    "barrier",
    "broadcast",
    "destroy_process_group",
    "get_communicator",
    "get_rank",
    "get_world_size",
    "init_process_group",
    "is_initialized",
    "is_main_process",
    "launched_rank",
    "launched_ranks",
]

BACKENDS = ("single", "mpi", "nccl")

# What MPI launchers tell the processes they start: MPICH's and Intel MPI's Hydra (PMI_SIZE),
# Open MPI (OMPI_COMM_WORLD_SIZE).
_LAUNCHER_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE")
_LAUNCHER_RANK_VARIABLES = ("PMI_RANK", "OMPI_COMM_WORLD_RANK")

_group: Communicator | None = None


def launched_ranks() -> int | None:
    """How many ranks the MPI launcher that started this process started (None: no launcher)."""
    for name in _LAUNCHER_SIZE_VARIABLES:
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return None


def launched_rank() -> int:
    """This process's rank as its MPI launcher numbered it (0 without a launcher): known before
    the process group exists, e.g. to keep all but rank 0 quiet from the start."""
    for name in _LAUNCHER_RANK_VARIABLES:
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 0


def _choose_backend(device: Any) -> str:
    if launched_ranks() is None:
        return "single"
    from ..kernels._cuda import simulating

    name = getattr(device, "name", device)
    return "nccl" if str(name).startswith("cuda") and not simulating() else "mpi"


def init_process_group(backend: str | None = None, device: Any = None) -> Communicator:
    """Join this process to the run's other ranks and return the communicator; a second call
    returns the first's (asking for another backend then raises). ``device``: the device the
    run trains on (``cpu`` or ``cuda``), which picks the backend when ``backend`` is None and
    must be chosen before the first GPU array exists (NCCL gives each rank its local GPU)."""
    global _group
    if backend is not None and backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}: expected one of {', '.join(BACKENDS)}")
    chosen = backend or _choose_backend(device)
    if _group is not None:
        if backend is not None and _group.backend != backend:
            raise RuntimeError(
                f"the process group is already initialised with backend {_group.backend!r}; "
                f"cannot switch to {backend!r}"
            )
        return _group
    if chosen == "single":
        _group = SingleProcess()
    elif chosen == "mpi":
        from .mpi import MPICommunicator

        _group = MPICommunicator()
    else:
        from .nccl import NCCLCommunicator

        _group = NCCLCommunicator()
    if _group.size > 1:
        _abort_all_ranks_on_uncaught_exceptions(_group)
    return _group


def _abort_all_ranks_on_uncaught_exceptions(group: Communicator) -> None:
    def hook(kind: type, error: BaseException, trace: Any) -> None:
        message = "".join(traceback.format_exception(kind, error, trace))
        sys.stderr.write(f"[rank {group.rank} of {group.size}] {message}")
        group.abort(1)

    sys.excepthook = hook


def is_initialized() -> bool:
    return _group is not None


def get_communicator() -> Communicator:
    """The process group's communicator; a single process's before :func:`init_process_group`."""
    return _group if _group is not None else SingleProcess()


def destroy_process_group() -> None:
    """Forget the process group (MPI itself is finalised when the process exits)."""
    global _group
    if _group is not None and hasattr(_group, "close"):
        _group.close()
    _group = None
    sys.excepthook = sys.__excepthook__


def get_rank() -> int:
    return get_communicator().rank


def get_world_size() -> int:
    return get_communicator().size


def is_main_process() -> bool:
    """Whether this is rank 0: the one that prints, writes files and draws."""
    return get_communicator().rank == 0


def barrier() -> None:
    get_communicator().barrier()


def all_reduce(value: Any, op: str = "sum", async_op: bool = False) -> Any:
    """Reduce ``value`` (a Tensor or an array) over the ranks, in place. Returns the Work when
    ``async_op`` (its ``wait()`` finishes it), else None, as PyTorch's ``all_reduce``."""
    work = get_communicator().iallreduce(_array(value), op)
    _changed_in_place(value)
    if async_op:
        return work
    work.wait()
    return None


def broadcast(value: Any, src: int = 0) -> None:
    """Rank ``src``'s ``value`` (a Tensor or an array) on every rank, in place."""
    get_communicator().broadcast(_array(value), src)
    _changed_in_place(value)


def _array(value: Any) -> Any:
    """The array of a Tensor, or the array itself (whose ``.data`` is a buffer, not an array)."""
    return value if hasattr(value, "flags") else value.data


def _changed_in_place(value: Any) -> None:
    """A tensor's version counter moves on, as after any in-place change (autograd checks it)."""
    if hasattr(value, "_version"):
        value._version += 1
