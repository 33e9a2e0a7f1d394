"""DistributedDataParallel: one model per rank, trained as one model on the global batch.

Every rank holds a full copy of the model and runs forward and backward on its own shard of the
batch (``fastnet.data.DistributedSampler``). Synchronous data parallelism then needs one thing:
after ``loss.backward()`` every rank's gradient is the mean over the ranks,

    g = (1/R) · Σ_r g_r        (R ranks; g_r the gradient of rank r's mean loss)

which, with equal shard sizes, is the gradient of the mean loss over the global batch, so every
rank's optimizer makes the same step from the same weights and the copies never drift apart.

* At construction the ranks check that they built the same model (names, shapes and dtypes of
  every parameter and buffer; RuntimeError on every rank otherwise, as PyTorch's check), then
  rank 0's parameters and buffers are broadcast to every rank.
* The parameters are grouped into buckets of at most ``bucket_cap_mb`` (one dtype each; the
  first at most 1 MB, as PyTorch's, so that communication starts early), in the reverse of their
  registration order, which is roughly the order backward finishes them. A
  parameter's post-accumulate-grad hook copies its gradient into its bucket's flat buffer; when
  a bucket is complete its all-reduce starts, non-blocking, while backward goes on computing the
  earlier layers' gradients. Buckets start in index order on every rank, as collectives must.
* When backward's walk ends (``fastnet.autograd.queue_callback``), the buckets still waiting
  (their parameters got no gradient in this backward: each contributes zeros) start, every
  all-reduce is waited for and each gradient becomes its bucket's sum times 1/R. So after
  ``backward()`` returns the gradients are final, before any optimizer step or clipping.
* ``no_sync()``: backward inside it accumulates gradients locally, with no communication
  (gradient accumulation); the first backward after it averages what accumulated.
* Buffers (BatchNorm's running statistics) stay per rank while they are updated; with
  ``broadcast_buffers`` rank 0's are broadcast before each training forward (PyTorch's default),
  and ``sync_buffers()`` does it on demand (the training loop, before evaluating). Batch
  statistics are each rank's own; ``SyncBatchNorm`` computes them over the global batch.

With one rank there is nothing to average: the hooks return at once and the wrapper costs
nothing. ``state_dict()`` names begin with ``module.`` as PyTorch's do; save ``ddp.module``'s
for a checkpoint that loads into a bare model.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from .. import autograd, distributed
from ..autograd import is_grad_enabled
from ..tensor import Tensor
from .module import Module, Parameter

__all__ = ["DistributedDataParallel"]

# The first bucket's cap: the last layers' gradients, finished first, start communicating while
# backward goes on, instead of waiting to fill a full bucket.
FIRST_BUCKET_BYTES = 2**20


class _Bucket:
    """Parameters whose gradients travel in one all-reduce, and that all-reduce's state."""

    def __init__(self, params: list[Parameter]) -> None:
        self.params = params
        self.offsets: list[int] = []
        size = 0
        for param in params:
            self.offsets.append(size)
            size += param.data.size
        first = params[0]
        self.buffer = first.device.xp.empty(size, dtype=first.data.dtype)
        self.reached: set[int] = set()  # the slots whose gradient this backward copied in
        self.work: Any = None  # the all-reduce in flight

    def full(self) -> bool:
        return len(self.reached) == len(self.params)

    def views(self) -> Iterator[tuple[Parameter, Any]]:
        """Each parameter with its piece of the buffer, shaped like it."""
        for param, start in zip(self.params, self.offsets, strict=True):
            yield param, self.buffer[start : start + param.data.size].reshape(param.data.shape)


class DistributedDataParallel(Module):
    """Wrap ``module`` so that backward averages its gradients over the ranks of
    ``communicator`` (default: the process group, ``fastnet.distributed``); see the module
    docstring."""

    def __init__(
        self,
        module: Module,
        communicator: distributed.Communicator | None = None,
        bucket_cap_mb: float = 25.0,
        broadcast_buffers: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(module, Module):
            raise TypeError(
                f"DistributedDataParallel wraps a fastnet Module, got {type(module).__name__}"
            )
        if not bucket_cap_mb > 0:
            raise ValueError(f"bucket_cap_mb must be positive, got {bucket_cap_mb}")
        self.module = module
        self.communicator = communicator or distributed.get_communicator()
        self.broadcast_buffers = broadcast_buffers
        self.bucket_cap_mb = bucket_cap_mb
        self.require_backward_grad_sync = True
        self._check_same_model()
        self._sync_from_rank0([*module.parameters(), *(b for _, b in module.named_buffers())])
        trainable = [p for p in module.parameters() if p.requires_grad and p.data.size]
        cap = int(bucket_cap_mb * 2**20)
        self._buckets = _buckets(trainable[::-1], min(cap, FIRST_BUCKET_BYTES), cap)
        self._place = {
            id(param): (index, slot)
            for index, bucket in enumerate(self._buckets)
            for slot, param in enumerate(bucket.params)
        }
        self._next_bucket = 0  # the first bucket whose all-reduce has not started
        self._syncing = False  # a synchronising backward walk is under way
        for param in trainable:
            param.register_post_accumulate_grad_hook(self._gradient_ready)

    def _check_same_model(self) -> None:
        """Raise on every rank when the ranks' models differ in their parameters' or buffers'
        names, shapes or dtypes (the broadcasts and buckets would not line up)."""
        if self.communicator.size == 1:
            return
        layout = [
            f"{name}:{tuple(tensor.shape)}:{tensor.dtype}"
            for name, tensor in [*self.module.named_parameters(), *self.module.named_buffers()]
            if tensor is not None
        ]
        mine = zlib.crc32(";".join(layout).encode())
        every = self.communicator.control.allgather(np.array([mine], np.int64))[:, 0]
        if len(set(every.tolist())) > 1:
            differing = [rank for rank, value in enumerate(every.tolist()) if value != every[0]]
            raise RuntimeError(
                f"DistributedDataParallel: the ranks built different models (rank 0's parameters "
                f"and buffers differ from those of rank(s) {differing} in names, shapes or "
                f"dtypes); every rank must build the same model"
            )

    # ------------------------------------------------------------------ forward, buffers
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self.training and self.broadcast_buffers and is_grad_enabled():
            self.sync_buffers()
        return self.module(*args, **kwargs)

    def sync_buffers(self) -> None:
        """Rank 0's buffers (running statistics) on every rank. A collective: every rank
        calls it."""
        self._sync_from_rank0([buffer for _, buffer in self.module.named_buffers()])

    def _sync_from_rank0(self, tensors: list[Tensor]) -> None:
        """Rank 0's values of ``tensors`` on every rank: one broadcast per dtype of all of them
        flattened together (a ResNet has a hundred small buffers; a broadcast each would cost a
        latency each, every step)."""
        if self.communicator.size == 1:
            return
        groups: dict[Any, list[Tensor]] = {}
        for tensor in tensors:
            if tensor is not None and tensor.data.size:
                groups.setdefault(tensor.data.dtype, []).append(tensor)
        for group in groups.values():
            xp = group[0].device.xp
            flat = xp.concatenate([tensor.data.reshape(-1) for tensor in group])
            self.communicator.broadcast(flat, 0)
            start = 0
            for tensor in group:
                size = tensor.data.size
                tensor.data[...] = flat[start : start + size].reshape(tensor.data.shape)
                start += size

    @contextmanager
    def no_sync(self) -> Iterator[None]:
        """Backward inside accumulates gradients on this rank only (no communication)."""
        before, self.require_backward_grad_sync = self.require_backward_grad_sync, False
        try:
            yield
        finally:
            self.require_backward_grad_sync = before

    # ------------------------------------------------------------------ gradients
    def _gradient_ready(self, param: Parameter) -> None:
        """A parameter's gradient is final for this backward: into its bucket, and start the
        buckets that are complete, in order."""
        if not self.require_backward_grad_sync or self.communicator.size == 1:
            return
        if not self._syncing:
            self._syncing = True
            autograd.queue_callback(self._finish_backward)
        index, slot = self._place[id(param)]
        bucket = self._buckets[index]
        start = bucket.offsets[slot]
        bucket.buffer[start : start + param.data.size] = param.grad.data.reshape(-1)
        bucket.reached.add(slot)
        while self._next_bucket < len(self._buckets) and self._buckets[self._next_bucket].full():
            self._start(self._buckets[self._next_bucket])
        for started in self._buckets[: self._next_bucket]:
            started.work.test()  # lets an MPI library without a progress thread move on

    def _start(self, bucket: _Bucket) -> None:
        bucket.work = self.communicator.iallreduce(bucket.buffer, "sum")
        self._next_bucket += 1

    def _finish_backward(self) -> None:
        """After the walk: start what is left (for a parameter this backward did not reach: the
        gradient it holds from a ``no_sync`` backward, or zeros), wait for everything, and hand
        each parameter the mean."""
        self._syncing = False
        for bucket in self._buckets[self._next_bucket :]:
            for slot, (param, view) in enumerate(bucket.views()):
                if slot not in bucket.reached:
                    view[...] = 0 if param.grad is None else param.grad.data
            self._start(bucket)
        scale = 1.0 / self.communicator.size
        for bucket in self._buckets:
            bucket.work.wait()
            bucket.work = None
            bucket.reached.clear()
            for param, view in bucket.views():
                if param.grad is None:
                    param.grad = Tensor._wrap(view * scale, param.device)
                else:
                    param.device.xp.multiply(view, scale, out=param.grad.data)
        self._next_bucket = 0

    def extra_repr(self) -> str:
        return f"ranks={self.communicator.size}, buckets={len(self._buckets)}"


def _buckets(params: list[Parameter], first_cap: int, cap: int) -> list[_Bucket]:
    """``params`` in consecutive groups of one dtype and device, the first at most
    ``first_cap`` bytes, the others ``cap`` (a larger parameter alone)."""
    groups: list[list[Parameter]] = []
    size = 0
    for param in params:
        nbytes = param.data.nbytes
        last = groups[-1][-1] if groups else None
        if (
            last is None
            or last.data.dtype != param.data.dtype
            or last.device != param.device
            or size + nbytes > (cap if len(groups) > 1 else first_cap)
        ):
            groups.append([])
            size = 0
        groups[-1].append(param)
        size += nbytes
    return [_Bucket(group) for group in groups]
