"""SyncBatchNorm: batch norm whose training statistics are those of every rank's batch together.

A data-parallel run gives each rank a shard of the batch; BatchNorm normalises each shard with
its own statistics (per rank, PyTorch's default too), which is noisy when shards are small.
``SyncBatchNorm`` (PyTorch's, argument for argument) normalises with the mean and variance of
the whole global batch and blends those into the running statistics
(:func:`fastnet.functional.sync_batch_norm`), at the cost of one allreduce forward and one
backward per layer. ``process_group`` is a fastnet :class:`~fastnet.distributed.Communicator`
(None: the process group's, looked up at each call).

As in PyTorch it is BatchNorm, without communication, whenever batch statistics are not needed
across ranks: in eval mode, with frozen statistics (``freeze_statistics``), and with one rank.
It accepts any (N, C, *spatial) input, and its state dict is BatchNorm's.
:meth:`SyncBatchNorm.convert_sync_batchnorm` swaps every BatchNorm of a model for one.
"""

from __future__ import annotations

from .. import functional as F
from ..distributed import Communicator, get_communicator
from ..tensor import Tensor
from .module import Module
from .normalization import _BatchNorm

__all__ = ["SyncBatchNorm"]


class SyncBatchNorm(_BatchNorm):
    """Batch norm over (N, C, *spatial) with statistics over the batches of all ranks."""

    # any (N, C, *spatial), as PyTorch's SyncBatchNorm; range() makes `in` a bounds check
    expected_dims = range(2, 65)
    shape_text = "(N, C, *spatial)"

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        process_group: Communicator | None = None,
    ) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats)
        self.process_group = process_group

    def _normalise(
        self, x: Tensor, batch_statistics: bool, momentum: float, relu: bool = False
    ) -> Tensor:
        group = get_communicator() if self.process_group is None else self.process_group
        # eval without running statistics uses this rank's batch, as PyTorch's does
        if not (batch_statistics and self.training and group.size > 1):
            return super()._normalise(x, batch_statistics, momentum, relu)
        out = F.sync_batch_norm(
            x,
            self.running_mean,
            self.running_var,
            self.weight,
            self.bias,
            training=True,
            momentum=momentum,
            eps=self.eps,
            communicator=group,
        )
        return out.relu() if relu else out

    @classmethod
    def convert_sync_batchnorm(
        cls, module: Module, process_group: Communicator | None = None
    ) -> Module:
        """``module`` with every BatchNorm in it (itself included: then a new module is returned)
        replaced by a SyncBatchNorm that shares its parameters and buffers and copies its
        settings and mode, as PyTorch's ``convert_sync_batchnorm``."""
        converted = module
        if isinstance(module, _BatchNorm):
            converted = cls(
                module.num_features,
                module.eps,
                module.momentum,
                module.affine,
                module.track_running_stats,
                process_group,
            )
            for name in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
                setattr(converted, name, getattr(module, name))
            converted.training = module.training
            converted.freeze_statistics = module.freeze_statistics
        for name, child in module.named_children():
            converted.add_module(name, cls.convert_sync_batchnorm(child, process_group))
        return converted
