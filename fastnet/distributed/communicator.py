"""The communicator contract, and the single-process communicator that implements it trivially.

A communicator joins ``size`` processes (ranks ``0 .. size-1``) that run the same program, each
on its own shard of the data. Every collective must be called by every rank, in the same order,
with arrays of the same shape and dtype:

* ``allreduce(a, op)``: every rank's ``a`` becomes ``op`` over the ranks' arrays, elementwise
  (``sum``, ``mean`` = sum / size, ``max``, ``min``), in place; returns ``a``.
* ``iallreduce(a, op)``: the same, started without waiting; the returned :class:`Work`'s
  ``wait()`` blocks until ``a`` holds the result (and returns it). Nothing may read or write
  ``a`` in between.
* ``broadcast(a, root)``: every rank's ``a`` becomes rank ``root``'s, in place; returns ``a``.
* ``allgather(a)``: a new array (size, *a.shape) whose row r is rank r's ``a``. The contract's
  own version is an allreduce of a zeroed buffer holding ``a`` in this rank's row (exact: every
  sum adds zeros to one value; size times the traffic of a real allgather, which a backend may
  use instead).
* ``barrier()``: returns once every rank has called it.
* ``abort(code)``: ends every rank's process now, with exit status ``code``; for a rank whose
  exception must not leave the others waiting forever in a collective.

Which arrays a communicator takes is its backend's: MPI reduces host (NumPy) arrays, NCCL device
(CuPy) arrays on CuPy's current stream. Arrays must be C-contiguous. ``control`` is a
communicator over host arrays for the few small host values (metrics, flags) a run exchanges;
it is the communicator itself for the host backends.

:class:`SingleProcess` is the case ``size == 1``: every collective checks its arguments as the
others do and leaves the array as it is, so one code path serves one process and many.
"""

from __future__ import annotations

import sys
from typing import Any, NoReturn

import numpy as np

REDUCE_OPS = ("sum", "mean", "max", "min")


def check_reduction(array: Any, op: str) -> Any:
    """``array`` if ``allreduce(array, op)`` can take it (see :func:`check_array`); ``mean``
    needs floating-point values."""
    if op not in REDUCE_OPS:
        raise ValueError(f"unknown reduction {op!r}: expected one of {', '.join(REDUCE_OPS)}")
    check_array(array, "allreduce")
    if op == "mean" and array.dtype.kind != "f":
        raise TypeError(f"allreduce(op='mean') needs floating-point values, got {array.dtype}")
    return array


def check_array(array: Any, what: str) -> Any:
    """``array`` if a collective can work on it in place (an array, C-contiguous, writable);
    TypeError or ValueError naming ``what`` otherwise."""
    flags = getattr(array, "flags", None)
    if flags is None or not hasattr(array, "dtype"):
        raise TypeError(f"{what} needs an array, got {type(array).__name__}")
    if not flags.c_contiguous:
        raise ValueError(f"{what} needs a C-contiguous array (got shape {tuple(array.shape)})")
    if isinstance(array, np.ndarray) and not flags.writeable:
        raise ValueError(f"{what} works in place: the array is read-only")
    return array


class Work:
    """A collective in flight. ``wait()`` blocks until it is done and returns its array;
    ``test()`` says whether it is done without blocking (and lets it progress)."""

    def __init__(self, array: Any) -> None:
        self.array = array

    def test(self) -> bool:
        return True

    def wait(self) -> Any:
        return self.array


class Communicator:
    """What the backends implement (see the module docstring)."""

    backend: str = "abstract"
    rank: int = 0
    size: int = 1
    local_rank: int = 0  # the rank among this machine's processes: which GPU a rank uses

    @property
    def control(self) -> Communicator:
        return self

    def allreduce(self, array: Any, op: str = "sum") -> Any:
        return self.iallreduce(array, op).wait()

    def iallreduce(self, array: Any, op: str = "sum") -> Work:  # pragma: no cover - abstract
        raise NotImplementedError

    def broadcast(self, array: Any, root: int = 0) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def allgather(self, array: Any) -> Any:
        check_array(array, "allgather")
        rows = array.reshape(1, *array.shape).repeat(self.size, axis=0)  # same array type
        rows[...] = 0
        rows[self.rank] = array
        return self.allreduce(rows, "sum")

    def barrier(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def abort(self, code: int = 1) -> NoReturn:  # pragma: no cover - abstract
        raise NotImplementedError

    def check_root(self, root: int) -> int:
        if isinstance(root, bool) or not isinstance(root, (int, np.integer)):
            raise TypeError(f"root must be a rank (an int), got {root!r}")
        if not 0 <= root < self.size:
            raise ValueError(
                f"root {root} is not a rank of this communicator (0 .. {self.size - 1})"
            )
        return int(root)

    def describe(self) -> str:
        """One line for ``fastnet info`` and run headers."""
        ranks = f"{self.size} rank{'s' if self.size != 1 else ''}"
        return f"{self.backend}, {ranks} (this process is rank {self.rank})"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} rank {self.rank} of {self.size}>"


class SingleProcess(Communicator):
    """One process: the collectives of ``size == 1``, which leave every array as it is."""

    backend = "single"

    def iallreduce(self, array: Any, op: str = "sum") -> Work:
        return Work(check_reduction(array, op))

    def broadcast(self, array: Any, root: int = 0) -> Any:
        self.check_root(root)
        return check_array(array, "broadcast")

    def barrier(self) -> None:
        pass

    def abort(self, code: int = 1) -> NoReturn:
        sys.stderr.flush()
        raise SystemExit(code)
