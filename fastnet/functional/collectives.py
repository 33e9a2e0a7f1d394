"""Differentiable collectives: ops whose forward and backward talk to the other ranks.

* ``all_gather(x)``: every rank's x (N, *S), stacked in rank order: y (R·N, *S), the same on
  every rank. A loss built on y (SimCLR's negatives from the global batch) is computed whole on
  every rank; its gradient on rank r's rows is a sum over the ranks' identical copies,

      dx_r = Σ_s dy^(s)[r·N : (r+1)·N]   (= R·dy[r·N : (r+1)·N] when every rank computed the
                                           same loss)

  an allreduce of dy (summed) and this rank's rows of it: PyTorch's differentiable all_gather.
  Averaged by DistributedDataParallel (1/R), the parameters then receive exactly the gradient
  of the one global loss.

The communicator must take arrays of x's device (MPI: cpu, NCCL: cuda); it defaults to the
process group's (:mod:`fastnet.distributed`). Every rank must call the op, with the same N.
"""

from __future__ import annotations

from typing import Any

from .. import distributed
from ..autograd import Function
from ..tensor import Tensor

__all__ = ["all_gather"]


class AllGather(Function):
    saves_inputs = False
    saves_output = False

    def forward(self, x: Any, communicator: distributed.Communicator) -> Any:
        self.communicator, self.rows = communicator, x.shape[0]
        gathered = communicator.allgather(x.copy() if not x.flags.c_contiguous else x)
        return gathered.reshape(communicator.size * x.shape[0], *x.shape[1:])

    def backward(self, grad: Any) -> tuple:
        total = self.communicator.allreduce(grad.copy(), "sum")
        start = self.communicator.rank * self.rows
        return (total[start : start + self.rows].copy(),)


def all_gather(x: Tensor, communicator: distributed.Communicator | None = None) -> Tensor:
    """Every rank's ``x`` (N, ...) stacked along dim 0 in rank order (see the module
    docstring); with one process, ``x`` itself."""
    communicator = communicator or distributed.get_communicator()
    if communicator.size == 1:
        return x
    return AllGather.apply(x, communicator=communicator)
