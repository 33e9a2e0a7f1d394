"""Synchronised batch normalisation: batch norm over the global batch of every rank.

Rank r holds x_r (N_r, C, *spatial); per channel c it has n_r = N_r·prod(spatial) values and the
global batch has n = Σ_r n_r. In training:

    forward:   mean = (1/n) Σ_all x            var = (1/n) Σ_all (x − mean)²      (biased)
               rstd = 1/√(var + eps)   x̂ = (x − mean)·rstd   y = x̂·weight + bias
               running_mean ← (1 − momentum)·running_mean + momentum·mean
               running_var  ← (1 − momentum)·running_var  + momentum·var·n/(n − 1)
    backward:  dbias_r = Σ_r dy   dweight_r = Σ_r dy·x̂       (this rank's values only)
               dx = weight·rstd·(dy − (1/n)·Σ_all dy − x̂·(1/n)·Σ_all dy·x̂)

so dx is the gradient of the sum of every rank's loss, whose statistics see every rank's x,
while dweight and dbias stay per rank (a data-parallel wrapper reduces parameter gradients
across ranks itself, as PyTorch's SyncBatchNorm leaves them to DDP). In eval mode the running
statistics normalise: that is :func:`~fastnet.functional.batch_norm`, with no communication.

Communication: one allreduce in the forward, one in the backward. The forward's gathers each
rank's (mean_r, M2_r = Σ_r (x − mean_r)², n_r) into its row of a zeroed (size, 2C + 1) float64
buffer; a sum of rows that are zero but one is exact, so it is an allgather, and every rank then
merges the same rows in the same order (Chan et al.'s parallel variance):

    mean = Σ_r n_r·mean_r / n     M2 = Σ_r M2_r + Σ_r n_r·(mean_r − mean)²     var = M2 / n

Unlike global sums of x and x² this never cancels when |mean| ≫ std (PyTorch's SyncBatchNorm
all-gathers the per-rank statistics for the same reason), and every rank gets bitwise the same
statistics, so the running statistics stay identical across ranks. The backward's allreduce sums
a (2, C) float64 buffer (Σ dy, Σ dy·x̂). Count and sums travel in float64 so a count past 2²⁴
stays exact. The per-rank sums run in the device's array module: on the host in float64 (a
float32 batch's sums lose up to log2(n) bits otherwise, and NumPy accumulates in the wider type
for one pass over x), on the GPU in x's dtype (CuPy's tree reductions; float64 arithmetic is slow
on most GPUs), as the batch-norm kernels do.

Buffers: x, y, dy, dx (N_r, C, *spatial) in x's dtype, float32 or float64; weight, bias,
running_mean, running_var (C,) in x's dtype. The communicator must take arrays of x's device
(MPI: cpu, NCCL: cuda).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..distributed import Communicator, get_communicator
from ..tensor import Function, Tensor
from .normalization import _check_channel_vector, batch_norm

__all__ = ["sync_batch_norm"]

OP = "sync_batch_norm"


class SyncBatchNorm(Function):
    saves_output = False  # the backward reads x and weight, never y

    def forward(
        self, x, *affine, running_mean, running_var, has_weight, has_bias, momentum, eps, group
    ):
        xp = self.device.xp
        channels, self.group = x.shape[1], group
        self.axes = (0,) + tuple(range(2, x.ndim))  # every axis but the channel's
        self.shape = (1, channels) + (1,) * (x.ndim - 2)  # a (C,) vector broadcast over x
        # float64 sums on the host; the GPU's in x's dtype (see the module docstring)
        self.accumulate = np.float64 if xp is np else x.dtype
        self.x = x
        self.weight = affine[0] if has_weight else None
        self.has_weight, self.has_bias = has_weight, has_bias

        count = x.size // channels
        if count <= 1 and group.size == 1:
            # one value has no variance; across ranks the global count is a device value that
            # is never read back (a GPU step must not wait on it), so, as in PyTorch, a
            # lone rank's batch is all that is checked
            raise ValueError(
                f"{OP}: Expected more than 1 value per channel when training, "
                f"got input shape {tuple(x.shape)}"
            )
        rows = xp.zeros((group.size, 2 * channels + 1), np.float64)
        if count:  # an empty shard adds nothing (its n_r = 0)
            local_mean = x.mean(axis=self.axes, dtype=self.accumulate)
            centred = x - local_mean.astype(x.dtype).reshape(self.shape)
            centred *= centred
            rows[group.rank, :channels] = local_mean
            rows[group.rank, channels:-1] = centred.sum(axis=self.axes, dtype=self.accumulate)
            rows[group.rank, -1] = count
        group.allreduce(rows, "sum")
        counts, means, squares = rows[:, -1:], rows[:, :channels], rows[:, channels:-1]
        self.count = counts.sum()  # a 0-d array: on a GPU it stays there
        mean = (counts * means).sum(axis=0) / self.count
        deviations = means - mean
        m2 = squares.sum(axis=0) + (counts * deviations * deviations).sum(axis=0)
        self.mean, self.rstd = mean, 1.0 / xp.sqrt(m2 / self.count + eps)
        if running_mean is not None:
            running_mean[...] = (1 - momentum) * running_mean + momentum * mean
            running_var[...] = (1 - momentum) * running_var + momentum * m2 / (self.count - 1)

        y = self._normalised()
        if has_weight:
            y *= self.weight.reshape(self.shape)
        if has_bias:
            y += affine[-1].reshape(self.shape)
        return y

    def _normalised(self) -> Any:
        """x̂ = (x − mean)·rstd in x's dtype, a new array (the backward recomputes it rather than
        keep a second activation-sized array alive until then)."""
        return (self.x - self._per_channel(self.mean)) * self._per_channel(self.rstd)

    def _per_channel(self, vector: Any) -> Any:
        """A (C,) float64 vector in x's dtype, shaped to broadcast over x."""
        return vector.astype(self.x.dtype).reshape(self.shape)

    def backward(self, grad):
        xp = self.device.xp
        xhat = self._normalised()
        sums = xp.stack(
            [
                grad.sum(axis=self.axes, dtype=self.accumulate),
                (grad * xhat).sum(axis=self.axes, dtype=self.accumulate),
            ]
        ).astype(np.float64)
        grad_bias, grad_weight = (s.astype(grad.dtype) for s in sums)  # this rank's, before the sum
        self.group.allreduce(sums, "sum")
        mean_dy, mean_dy_xhat = sums / self.count
        scale = self.rstd if self.weight is None else self.rstd * self.weight
        grad_x = grad - self._per_channel(mean_dy) - xhat * self._per_channel(mean_dy_xhat)
        grad_x *= self._per_channel(scale)
        return (
            (grad_x,)
            + ((grad_weight,) if self.has_weight else ())
            + ((grad_bias,) if self.has_bias else ())
        )


def sync_batch_norm(
    input: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
    communicator: Communicator | None = None,
) -> Tensor:
    """Batch normalisation of x (N, C) or (N, C, *spatial) with the statistics of the batch of
    every rank of ``communicator`` (None: the process group's, at the call).

    ``training=True`` normalises with the global batch's mean and biased variance and, when
    ``running_mean`` and ``running_var`` are given, blends the global mean and unbiased variance
    into them in place; every rank must call it, in the same order. ``training=False`` is
    :func:`~fastnet.functional.batch_norm` in eval mode: the running statistics, no collective.
    One rank's batch of one value per channel raises, as in batch_norm; across ranks the global
    count stays on the device (as in PyTorch), so there it is the caller's to keep above one.
    """
    if not training:
        return batch_norm(input, running_mean, running_var, weight, bias, False, momentum, eps)
    x = input
    if x.ndim < 2:
        raise ValueError(f"{OP}: input must be (N, C) or (N, C, *spatial), got shape {x.shape}")
    if x.dtype not in (np.float32, np.float64):
        raise TypeError(f"{OP}: expected a float32 or float64 input, got {x.dtype}")
    if (running_mean is None) != (running_var is None):
        raise ValueError(f"{OP}: give both running_mean and running_var, or neither")
    if not (0.0 <= momentum <= 1.0 and eps >= 0.0):
        raise ValueError(f"{OP}: momentum must be in [0, 1] and eps >= 0, got {momentum}, {eps}")
    named = (("running_mean", running_mean), ("running_var", running_var))
    named += (("weight", weight), ("bias", bias))
    for name, vector in named:
        _check_channel_vector(name, vector, x, OP)
        if vector is not None and vector.dtype != x.dtype:
            raise TypeError(f"{OP}: {name} dtype {vector.dtype} must match x's dtype {x.dtype}")
    affine = [p for p in (weight, bias) if p is not None]
    return SyncBatchNorm.apply(
        x,
        *affine,
        running_mean=None if running_mean is None else running_mean.data,
        running_var=None if running_var is None else running_var.data,
        has_weight=weight is not None,
        has_bias=bias is not None,
        momentum=float(momentum),
        eps=float(eps),
        group=get_communicator() if communicator is None else communicator,
    )
