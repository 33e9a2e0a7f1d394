"""Shape ops: ``flatten`` (the Tensor's own reshape, so its gradient is the reshape back) and
``pad`` (PyTorch's ``torch.nn.functional.pad``).

``pad(x, pad, mode, value)``: ``pad`` is a flat sequence of (left, right) widths, last dimension
first: ``(left, right, top, bottom, front, back)``. Along a padded axis of size ``n`` the output
has ``n + left + right`` positions; position ``o`` stands for the input position
``p = o − left``.

* ``constant`` (any number of dimensions): ``y[o] = x[p]`` for ``0 ≤ p < n``, ``value``
  elsewhere; a negative width crops. One :class:`ConstantPad` Function: the output is filled with
  ``value`` and the kept part of ``x`` written into it; its gradient is ``dy`` over that part.
* ``reflect`` (``x[1], x[0] | x[0] … x[n-1] | x[n-2], x[n-3]``: ``p ↦ |p|``, mirrored again at
  ``n − 1``), ``replicate`` (``p`` clamped to [0, n − 1]) and ``circular`` (``p`` modulo the
  size, after negative widths crop): the last 1, 2 or 3 dimensions of an input with one or two
  more (a batch and channels, or channels alone), as PyTorch. Each padded axis is a gather
  ``y = x[..., index, ...]`` with an int64 index array of the output's length along it, so these
  modes are Tensor indexing, whose gradient scatter-adds ``dy`` back (positions picked twice
  get both contributions).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..autograd import Function, not_a_tensor
from ..tensor import Tensor

__all__ = ["ConstantPad", "flatten", "pad"]

MODES = ("constant", "reflect", "replicate", "circular")


def flatten(x: Tensor, start_dim: int = 1, end_dim: int = -1) -> Tensor:
    if not isinstance(x, Tensor):  # a NumPy array has a flatten of its own, with other arguments
        raise not_a_tensor("flatten", x)
    return x.flatten(start_dim, end_dim)


class ConstantPad(Function):
    """``x`` in a frame of ``value``: ``widths`` is one (left, right) per axis, negative to
    crop."""

    saves_inputs = saves_output = False

    def forward(self, a, widths, value):
        self.shape = a.shape
        self.source = tuple(
            slice(max(-left, 0), n - max(-right, 0))
            for n, (left, right) in zip(a.shape, widths, strict=True)
        )
        self.target = tuple(
            slice(max(left, 0), max(left, 0) + max(kept.stop - kept.start, 0))
            for kept, (left, _) in zip(self.source, widths, strict=True)
        )
        shape = tuple(n + left + right for n, (left, right) in zip(a.shape, widths, strict=True))
        out = self.device.xp.full(shape, value, dtype=a.dtype)
        out[self.target] = a[self.source]
        return out

    def backward(self, grad):
        if all(
            kept.start == 0 and kept.stop == n
            for kept, n in zip(self.source, self.shape, strict=True)
        ):
            return (grad[self.target],)  # nothing was cropped: a view
        full = self.device.xp.zeros(self.shape, dtype=grad.dtype)
        full[self.source] = grad[self.target]
        return (full,)


def pad(
    input: Tensor, pad: Sequence[int], mode: str = "constant", value: float | None = None
) -> Tensor:
    """``input`` padded by ``pad`` (left, right widths, last dimension first) in ``mode``:
    "constant" (with ``value``, default 0), "reflect", "replicate" or "circular"."""
    if not isinstance(input, Tensor):
        raise not_a_tensor("pad", input)
    widths = _widths(pad, input.shape)
    if mode == "constant":
        return ConstantPad.apply(input, widths=widths, value=0 if value is None else value)
    if mode not in MODES:
        raise NotImplementedError(f"pad(): unknown padding mode {mode!r}; expected one of {MODES}")
    if value not in (None, 0):
        raise RuntimeError(f'pad(): padding mode "{mode}" does not take a value argument')
    padded = len(pad) // 2
    if input.ndim not in (padded + 1, padded + 2):
        raise NotImplementedError(
            f'pad(): mode "{mode}" pads the last 1, 2 or 3 dimensions of an input with one or two '
            f"more; got {len(pad)} widths for an input of shape {input.shape}"
        )
    out = input
    for axis in range(input.ndim - padded, input.ndim):
        left, right = widths[axis]
        index = _gather_index(mode, input.shape[axis], left, right, axis, input.shape)
        out = out[(slice(None),) * axis + (input.device.asarray(index),)]
    return out


def _widths(pad: Sequence[int], shape: tuple) -> tuple[tuple[int, int], ...]:
    """(left, right) for every axis of ``shape`` from PyTorch's flat, last-axis-first ``pad``."""
    if not isinstance(pad, (tuple, list)) or not all(
        isinstance(w, (int, np.integer)) and not isinstance(w, bool) for w in pad
    ):
        raise TypeError(f"pad(): pad must be a tuple of ints, got {pad!r}")
    if len(pad) % 2:
        raise RuntimeError(f"pad(): padding length must be divisible by 2, got {len(pad)}")
    if len(pad) // 2 > len(shape):
        raise RuntimeError(
            f"pad(): padding length {len(pad)} is more than two per dimension of an input of "
            f"shape {shape}"
        )
    widths = [(0, 0)] * len(shape)
    for pair in range(len(pad) // 2):
        axis = len(shape) - 1 - pair
        left, right = int(pad[2 * pair]), int(pad[2 * pair + 1])
        if shape[axis] + left + right < 0:
            raise RuntimeError(
                f"pad(): widths ({left}, {right}) on dimension {axis} of shape {shape} give a "
                f"negative size {shape[axis] + left + right}"
            )
        widths[axis] = (left, right)
    return tuple(widths)


def _gather_index(
    mode: str, size: int, left: int, right: int, axis: int, shape: tuple
) -> np.ndarray:
    """For each output position along the axis, the input position it copies."""

    def refuse(reason: str) -> RuntimeError:
        return RuntimeError(
            f'pad(): mode "{mode}" with widths ({left}, {right}) on dimension {axis} of shape '
            f"{shape}: {reason}"
        )

    if size == 0:
        raise refuse("the dimension is empty")
    if mode == "circular":  # negative widths crop first; the rest wraps around what is left
        start = max(-left, 0)
        kept = size - start - max(-right, 0)
        if kept <= 0 or max(left, right) > kept:
            raise refuse("the padding wraps around the input more than once")
        return start + (np.arange(size + left + right) - max(left, 0)) % kept
    position = np.arange(size + left + right) - left
    if mode == "replicate":
        return np.clip(position, 0, size - 1)
    if max(left, right) >= size:
        raise refuse("the widths must be less than the size")
    return (size - 1) - np.abs((size - 1) - np.abs(position))
