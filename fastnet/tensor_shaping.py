"""The shape and conversion methods of :class:`~fastnet.tensor.Tensor` that PyTorch users reach
for: squeeze, unsqueeze, expand, expand_as, repeat, flip, clone, contiguous, and the dtype
conversions long, int, bool and type_as.

:class:`Shaping` is a mixin of Tensor, in a module of its own so that tensor.py stays one concern.
Its ops, as Functions over raw arrays (``x`` of shape ``S``, output ``y``):

* squeeze / unsqueeze: Tensor's reshape (a view; the gradient is reshaped back).
* :class:`Expand`: ``y = broadcast(x)`` to a shape that repeats size-1 axes and adds leading ones
  (a read-only view, no copy); the gradient is summed over the repeated axes (the engine's
  ``unbroadcast``).
* :class:`Repeat`: ``y = tile(x, r)`` of shape ``r·S`` (``S`` padded with leading 1s); the
  gradient ``dx[s] = Σ_k dy[k·S + s]``: ``dy`` viewed as ``(r0, S0, r1, S1, ...)`` summed over
  the ``r`` axes.
* :class:`Flip`: ``y = x`` reversed along some axes (a copy, as PyTorch's); ``dx = flip(dy)``.
* :class:`Clone`: ``y = x`` in new memory; ``dx = dy``.

Conversions to a floating dtype go through ``Tensor.to`` (differentiable); to an integer or bool
dtype they give a tensor outside the graph, as in PyTorch, where such tensors carry no gradient.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .autograd import Function
from .tensor_reductions import _normalize_axes

if TYPE_CHECKING:
    from .tensor import Tensor

__all__ = ["Clone", "Expand", "Flip", "Repeat", "Shaping"]


class Expand(Function):
    saves_inputs = saves_output = False

    def forward(self, a, shape):
        return self.device.xp.broadcast_to(a, shape)

    def backward(self, grad):
        return (grad,)  # the engine sums it over the expanded axes (unbroadcast)


class Repeat(Function):
    saves_inputs = saves_output = False

    def forward(self, a, repeats):
        self.shape = a.shape
        padded = (1,) * (len(repeats) - a.ndim) + tuple(a.shape)
        self.interleaved = tuple(n for pair in zip(repeats, padded, strict=True) for n in pair)
        return self.device.xp.tile(a, repeats)

    def backward(self, grad):
        repeat_axes = tuple(range(0, len(self.interleaved), 2))
        return (grad.reshape(self.interleaved).sum(axis=repeat_axes).reshape(self.shape),)


class Flip(Function):
    saves_inputs = saves_output = False

    def forward(self, a, axes):
        self.axes = axes
        return self.device.xp.flip(a, axis=axes).copy()

    def backward(self, grad):
        return (self.device.xp.flip(grad, axis=self.axes),)


class Clone(Function):
    saves_inputs = saves_output = False

    def forward(self, a):
        return a.copy()

    def backward(self, grad):
        return (grad,)


def _sizes(op: str, sizes: tuple) -> tuple[int, ...]:
    """Sizes given as varargs or as one sequence, checked to be ints."""
    if len(sizes) == 1 and isinstance(sizes[0], Sequence):
        sizes = tuple(sizes[0])
    for size in sizes:
        if isinstance(size, (bool, np.bool_)) or not isinstance(size, (int, np.integer)):
            raise TypeError(f"{op}(): sizes must be ints, got {sizes!r}")
    return tuple(int(size) for size in sizes)


def _axes(dims: Any, ndim: int) -> tuple[int, ...]:
    """Non-negative axes from an int or a sequence of them (a 0-d tensor takes 0 or -1, which
    name no axis); out of range or named twice raises, as in PyTorch."""
    return _normalize_axes(dims, ndim) or ()


class Shaping:
    """Shape and conversion methods of Tensor (which holds ``data``, ``device`` and the shape)."""

    __slots__ = ()

    # ----------------------------------------------------------------- shape
    def squeeze(self: Tensor, dim: int | Sequence[int] | None = None) -> Tensor:
        """Drop the size-1 dimensions (all of them, or those among ``dim``: a named dimension of
        another size is left alone, as in PyTorch)."""
        if dim is None:
            axes = range(self.ndim)
        else:
            axes = _axes(dim, self.ndim)
        dropped = {axis for axis in axes if self.shape[axis] == 1}
        return self.reshape(tuple(n for axis, n in enumerate(self.shape) if axis not in dropped))

    def unsqueeze(self: Tensor, dim: int) -> Tensor:
        """Insert a size-1 dimension at ``dim``, in [-ndim - 1, ndim] (negative counts from the
        end of the result)."""
        if isinstance(dim, (bool, np.bool_)) or not isinstance(dim, (int, np.integer)):
            raise TypeError(f"unsqueeze(): dim must be an int, got {type(dim).__name__}")
        if not -self.ndim - 1 <= dim <= self.ndim:
            raise IndexError(
                f"unsqueeze(): dim {dim} is out of range for a tensor with {self.ndim} "
                f"dimensions (expected a dim in [{-self.ndim - 1}, {self.ndim}])"
            )
        axis = dim + self.ndim + 1 if dim < 0 else dim
        return self.reshape(self.shape[:axis] + (1,) + self.shape[axis:])

    def expand(self: Tensor, *sizes: Any) -> Tensor:
        """A view with size-1 dimensions repeated to ``sizes`` and new leading dimensions; -1
        keeps a dimension's size. The gradient sums back over what was repeated."""
        sizes = _sizes("expand", sizes)
        new = len(sizes) - self.ndim
        if new < 0:
            raise RuntimeError(
                f"expand(): {len(sizes)} sizes {sizes} for a tensor of shape {self.shape}: give "
                f"at least one per dimension ({self.ndim})"
            )
        shape = []
        for axis, size in enumerate(sizes):
            old = self.shape[axis - new] if axis >= new else None
            if size == -1 and old is not None:
                size = old
            elif size < 0:
                raise RuntimeError(
                    f"expand(): size {size} at dimension {axis} of {sizes} is not allowed "
                    "(-1 keeps an existing dimension's size; new leading dimensions need a size)"
                )
            elif old not in (None, 1, size):
                raise RuntimeError(
                    f"expand(): the expanded size {size} must match the existing size {old} at "
                    f"non-singleton dimension {axis} (shape {self.shape} to {sizes})"
                )
            shape.append(size)
        return Expand.apply(self, shape=tuple(shape))

    def expand_as(self: Tensor, other: Tensor) -> Tensor:
        return self.expand(other.shape)

    def repeat(self: Tensor, *sizes: Any) -> Tensor:
        """Tile the tensor ``sizes[i]`` times along dimension i (extra leading sizes add
        dimensions); a copy, unlike expand."""
        repeats = _sizes("repeat", sizes)
        if len(repeats) < self.ndim:
            raise RuntimeError(
                f"repeat(): {len(repeats)} repeats {repeats} for a tensor of shape {self.shape}: "
                f"give at least one per dimension ({self.ndim})"
            )
        if any(n < 0 for n in repeats):
            raise RuntimeError(f"repeat(): repeats must be non-negative, got {repeats}")
        return Repeat.apply(self, repeats=repeats)

    def flip(self: Tensor, *dims: Any) -> Tensor:
        """The values reversed along ``dims`` (an int, several, or a sequence); a copy."""
        dims = dims[0] if len(dims) == 1 else dims
        return Flip.apply(self, axes=_axes(dims, self.ndim))

    # ----------------------------------------------------------------- memory
    def clone(self: Tensor) -> Tensor:
        """A copy in new memory, tracked by autograd (the gradient passes through)."""
        return Clone.apply(self)

    def contiguous(self: Tensor) -> Tensor:
        """The tensor itself when its values are in C order, else a differentiable copy that
        is."""
        return self if self.data.flags.c_contiguous else Clone.apply(self)

    # ----------------------------------------------------------------- dtype
    def type_as(self: Tensor, other: Tensor) -> Tensor:
        return self._converted(other.dtype)

    def long(self: Tensor) -> Tensor:
        return self._converted(np.int64)

    def int(self: Tensor) -> Tensor:
        return self._converted(np.int32)

    def bool(self: Tensor) -> Tensor:
        return self._converted(np.bool_)

    def _converted(self: Tensor, dtype: Any) -> Tensor:
        """This tensor in ``dtype`` (itself when it already is); outside the graph when
        ``dtype`` is not floating, since such a tensor carries no gradient."""
        dtype = np.dtype(dtype)
        if dtype == self.dtype:
            return self
        if dtype.kind == "f":
            return self.to(dtype=dtype)
        return self._wrap(self.data.astype(dtype), self.device)
